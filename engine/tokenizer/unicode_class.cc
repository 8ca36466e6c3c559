#include "engine/tokenizer/unicode_class.h"

#include <unicode/uchar.h>

#include <array>

namespace tierserve::tokenizer {
namespace {

uint8_t icu_class(char32_t cp) {
  const UChar32 c = static_cast<UChar32>(cp);
  const uint32_t mask = U_GET_GC_MASK(c);
  uint8_t bits = kClassAny;
  if (mask & U_GC_L_MASK) bits |= kClassLetter;
  if (mask & U_GC_N_MASK) bits |= kClassNumber;
  if (u_isUWhiteSpace(c)) bits |= kClassSpace;
  if (cp == '\r' || cp == '\n') bits |= kClassNewline;
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) ||
      (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) ||
      u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) {
    bits |= kClassWord;
  }
  return bits;
}

const std::array<uint8_t, 128>& ascii_table() {
  static const std::array<uint8_t, 128> table = [] {
    std::array<uint8_t, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = icu_class(c);
    return t;
  }();
  return table;
}

}  // namespace

uint8_t char_class(char32_t cp) {
  if (cp < 128) return ascii_table()[cp];
  return icu_class(cp);
}

}  // namespace tierserve::tokenizer

#include "engine/tokenizer/byte_level.h"

#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

struct ByteMap {
  std::array<char32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 324> from_cp{};  // code points up to 256 + 67, -1 when unmapped

  ByteMap() {
    from_cp.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
      append_utf8(to_cp[b], &to_utf8[b]);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

char32_t byte_to_unicode(uint8_t b) { return byte_map().to_cp[b]; }

const std::string& byte_to_unicode_utf8(uint8_t b) { return byte_map().to_utf8[b]; }

std::optional<uint8_t> unicode_to_byte(char32_t cp) {
  const auto& map = byte_map();
  if (cp >= map.from_cp.size() || map.from_cp[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(map.from_cp[cp]);
}

std::string bytes_to_unicode_text(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) out += byte_to_unicode_utf8(static_cast<uint8_t>(c));
  return out;
}

std::optional<std::string> unicode_text_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    int len;
    const auto byte = unicode_to_byte(decode_utf8(text, pos, &len));
    if (!byte) return std::nullopt;
    out.push_back(static_cast<char>(*byte));
    pos += len;
  }
  return out;
}

}  // namespace tierserve::tokenizer

#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

// Length of the well-formed sequence at `s[pos]`, or 0 when it is invalid; `*valid_prefix` is
// set to the length of the longest prefix that could still start a valid sequence (at least 1),
// which is what from_utf8_lossy replaces by one U+FFFD.
int well_formed_length(std::string_view s, size_t pos, int* valid_prefix) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(pos);
  *valid_prefix = 1;
  if (c < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k <= need; ++k) {
    if (pos + k >= s.size()) return 0;
    const unsigned char t = b(pos + k);
    if (k == 1 ? (t < lo || t > hi) : (t < 0x80 || t > 0xBF)) return 0;
    *valid_prefix = k + 1;
  }
  return need + 1;
}

}  // namespace

Status validate_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    int prefix;
    const int len = well_formed_length(text, pos, &prefix);
    if (len == 0) {
      return invalid_argument("text is not valid UTF-8: bad byte sequence at byte offset " +
                              std::to_string(pos));
    }
    pos += len;
  }
  return Status::ok();
}

void append_utf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    int prefix;
    const int len = well_formed_length(bytes, pos, &prefix);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += prefix;
    }
  }
  return out;
}

void replace_all(std::string* text, const std::string& from, const std::string& to) {
  if (from.empty() || text->find(from) == std::string::npos) return;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text->find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(*text, pos, hit - pos);
    out += to;
  }
  out.append(*text, pos);
  *text = std::move(out);
}

}  // namespace tierserve::tokenizer

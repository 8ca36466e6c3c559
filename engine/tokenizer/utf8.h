// UTF-8 helpers for the tokenizers: strict validation, decoding one code point, encoding, and
// Rust's String::from_utf8_lossy (which Hugging Face's decoders use).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tierserve::tokenizer {

// OK when `text` is well-formed UTF-8 (no overlongs, surrogates or values above U+10FFFF);
// otherwise kInvalidArgument naming the byte offset of the first bad sequence.
Status validate_utf8(std::string_view text);

// Decodes the code point at `text[pos]`, which must start a well-formed sequence (validated text).
// Stores its length in bytes in `*len`.
inline char32_t decode_utf8(std::string_view text, size_t pos, int* len) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  if (s[0] < 0x80) {
    *len = 1;
    return s[0];
  }
  if (s[0] < 0xE0) {
    *len = 2;
    return (char32_t(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
  }
  if (s[0] < 0xF0) {
    *len = 3;
    return (char32_t(s[0] & 0x0F) << 12) | (char32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  }
  *len = 4;
  return (char32_t(s[0] & 0x07) << 18) | (char32_t(s[1] & 0x3F) << 12) |
         (char32_t(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

// Appends the UTF-8 encoding of `cp` (a valid scalar value) to `out`.
void append_utf8(char32_t cp, std::string* out);

// Length in bytes of the UTF-8 sequence that starts with lead byte `c` (1 for a stray byte).
inline int utf8_sequence_length(unsigned char c) {
  if (c < 0xC0) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

// `bytes` as text, with each maximal invalid subsequence replaced by U+FFFD, exactly as Rust's
// String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);

// Replaces every occurrence of `from` (non-empty) in `text` by `to`, left to right, without
// rescanning replaced text (the Replace normalizer and decoder with a string pattern).
void replace_all(std::string* text, const std::string& from, const std::string& to);

}  // namespace tierserve::tokenizer

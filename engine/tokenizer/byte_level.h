// GPT-2's byte <-> unicode map: every byte is shown as a printable code point so that byte-level
// BPE vocabularies can be stored as text (the space byte 0x20 becomes U+0120 'Ġ').
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tierserve::tokenizer {

// The code point that stands for byte `b`.
char32_t byte_to_unicode(uint8_t b);

// The UTF-8 text of byte_to_unicode(b), precomputed.
const std::string& byte_to_unicode_utf8(uint8_t b);

// The byte that `cp` stands for, or nullopt when `cp` is not in the map.
std::optional<uint8_t> unicode_to_byte(char32_t cp);

// `text` with every byte replaced by its code point (the ByteLevel pre-tokenizer's output).
std::string bytes_to_unicode_text(std::string_view text);

// The bytes that `text` (valid UTF-8) stands for, or nullopt when a code point is not in the map.
std::optional<std::string> unicode_text_to_bytes(std::string_view text);

}  // namespace tierserve::tokenizer

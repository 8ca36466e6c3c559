// AddedTokens: tokenizer.json's "added_tokens", found in text before the model sees it, with the
// single_word / lstrip / rstrip rules of Hugging Face's AddedVocabulary. Tokens with
// normalized=false are matched in the raw text, the others in each normalized segment.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tierserve::tokenizer {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;  // only matches when not touching word characters on either side
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched in normalized text instead of the raw text
  bool special = false;      // skipped by decode(skip_special_tokens=true)
};

// One piece of a text: an added token (id >= 0) or plain text (id == -1), as a byte range.
struct Segment {
  int32_t id;
  size_t begin;
  size_t end;
};

// Leftmost-longest, non-overlapping matching of a set of added tokens.
class AddedTokenMatcher {
 public:
  // `tokens` are copied; their contents must be non-empty (empty ones are ignored).
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  AddedTokenMatcher() = default;

  // Splits `text` into segments (plain-text segments may be empty only when `text` is).
  void split(std::string_view text, std::vector<Segment>* out) const;
  bool empty() const { return tokens_.empty(); }

 private:
  // The longest token matching at `pos`, or nullptr.
  const AddedToken* longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;          // sorted by first byte, then longest first
  std::array<uint32_t, 257> first_byte_{};  // tokens_ index range per first byte
};

}  // namespace tierserve::tokenizer

#include "engine/tokenizer/added_tokens.h"

#include <algorithm>

#include "engine/tokenizer/unicode_class.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

// The start of the code point that ends at `end` (> 0).
size_t previous_char(std::string_view text, size_t end) {
  size_t p = end - 1;
  while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

uint8_t class_at(std::string_view text, size_t pos) {
  int len;
  return char_class(decode_utf8(text, pos, &len));
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) {
  for (auto& t : tokens) {
    if (!t.content.empty()) tokens_.push_back(std::move(t));
  }
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const AddedToken& a, const AddedToken& b) {
    const auto fa = static_cast<unsigned char>(a.content[0]);
    const auto fb = static_cast<unsigned char>(b.content[0]);
    if (fa != fb) return fa < fb;
    return a.content.size() > b.content.size();
  });
  size_t i = 0;
  for (int b = 0; b < 256; ++b) {
    first_byte_[b] = static_cast<uint32_t>(i);
    while (i < tokens_.size() && static_cast<unsigned char>(tokens_[i].content[0]) == b) ++i;
  }
  first_byte_[256] = static_cast<uint32_t>(tokens_.size());
}

const AddedToken* AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  const auto b = static_cast<unsigned char>(text[pos]);
  const std::string_view rest = text.substr(pos);
  for (uint32_t i = first_byte_[b]; i < first_byte_[b + 1]; ++i) {
    if (rest.starts_with(tokens_[i].content)) return &tokens_[i];
  }
  return nullptr;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>* out) const {
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size() && !tokens_.empty()) {
    const unsigned char b = static_cast<unsigned char>(text[pos]);
    const AddedToken* t = first_byte_[b] == first_byte_[b + 1] ? nullptr : longest_at(text, pos);
    if (t == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + t->content.size();
    pos = stop;  // matches never overlap, even when a rule below rejects this one
    if (start < start_offset) continue;
    if (t->single_word) {
      const bool word_before =
          start > 0 && (class_at(text, previous_char(text, start)) & kClassWord);
      const bool word_after = stop < text.size() && (class_at(text, stop) & kClassWord);
      if (word_before || word_after) continue;
    }
    if (t->lstrip) {
      size_t s = start;
      while (s > start_offset && (class_at(text, previous_char(text, s)) & kClassSpace)) {
        s = previous_char(text, s);
      }
      start = s;
    }
    if (t->rstrip) {
      int len;
      while (stop < text.size() && (char_class(decode_utf8(text, stop, &len)) & kClassSpace)) {
        stop += len;
      }
    }
    if (start > start_offset) out->push_back(Segment{-1, start_offset, start});
    out->push_back(Segment{t->id, start, stop});
    start_offset = stop;
  }
  if (start_offset < text.size() || text.empty()) {
    out->push_back(Segment{-1, start_offset, text.size()});
  }
}

}  // namespace tierserve::tokenizer

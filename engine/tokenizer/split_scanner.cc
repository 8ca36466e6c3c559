#include "engine/tokenizer/split_scanner.h"

#include <cctype>

#include "engine/tokenizer/unicode_class.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

constexpr uint8_t kOtherMask = kClassLetter | kClassNumber | kClassSpace;

// Reads classes of the code points of one text; positions are byte offsets.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  size_t size() const { return text_.size(); }
  unsigned char byte(size_t pos) const {
    return pos < text_.size() ? static_cast<unsigned char>(text_[pos]) : 0;
  }
  // Class bits of the code point at `pos` (0 at the end); its byte length in `*len`.
  uint8_t cls(size_t pos, int* len) const {
    if (pos >= text_.size()) {
      *len = 0;
      return 0;
    }
    return char_class(decode_utf8(text_, pos, len));
  }
  // The end of the run of code points from `pos` whose classes satisfy `pred`, and the count.
  template <typename Pred>
  size_t run(size_t pos, Pred pred, size_t max_count = SIZE_MAX, size_t* count = nullptr) const {
    size_t n = 0;
    int len;
    while (n < max_count && pos < text_.size() && pred(cls(pos, &len))) {
      pos += len;
      ++n;
    }
    if (count) *count = n;
    return pos;
  }

 private:
  std::string_view text_;
};

bool is_other(uint8_t c) { return c != 0 && (c & kOtherMask) == 0; }
bool is_letter(uint8_t c) { return c & kClassLetter; }
bool is_number(uint8_t c) { return c & kClassNumber; }
bool is_space(uint8_t c) { return c & kClassSpace; }

// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`, optionally ASCII case-insensitive; the match length or 0.
size_t match_contraction(const Cursor& t, size_t pos, bool ignore_case) {
  if (t.byte(pos) != '\'') return 0;
  const auto at = [&](size_t k) {
    const unsigned char c = t.byte(pos + k);
    return ignore_case ? static_cast<unsigned char>(std::tolower(c)) : c;
  };
  const unsigned char a = at(1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' || a == 'v') && at(2) == 'e') return 3;
  if (a == 'l' && at(2) == 'l') return 3;
  return 0;
}

// `\s+(?!\S)|\s+` at `pos` (a whitespace code point): the whole run when it reaches the end of the
// text or is a single code point, otherwise the run minus its last code point.
size_t match_trailing_space(const Cursor& t, size_t pos) {
  size_t count;
  const size_t end = t.run(pos, is_space, SIZE_MAX, &count);
  if (end == t.size() || count == 1) return end;
  // Back up one code point: the last whitespace character.
  size_t last = end - 1;
  while ((t.byte(last) & 0xC0) == 0x80) --last;
  return last;
}

size_t next_gpt2(const Cursor& t, size_t pos) {
  if (size_t n = match_contraction(t, pos, /*ignore_case=*/false)) return pos + n;
  int len0, len1;
  const uint8_t c0 = t.cls(pos, &len0);
  const bool space = t.byte(pos) == ' ';
  const uint8_t c1 = space ? t.cls(pos + 1, &len1) : 0;
  for (auto pred : {is_letter, is_number, is_other}) {
    if (space && pred(c1)) return t.run(pos + 1, pred);
    if (pred(c0)) return t.run(pos, pred);
  }
  return match_trailing_space(t, pos);
}

size_t next_cl100k(const Cursor& t, size_t pos, int max_digits) {
  if (size_t n = match_contraction(t, pos, /*ignore_case=*/true)) return pos + n;
  int len0, len1;
  const uint8_t c0 = t.cls(pos, &len0);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!(c0 & (kClassNewline | kClassLetter | kClassNumber))) {
    if (is_letter(t.cls(pos + len0, &len1))) return t.run(pos + len0, is_letter);
  } else if (is_letter(c0)) {
    return t.run(pos, is_letter);
  }
  // \p{N}{1,max}
  if (is_number(c0)) return t.run(pos, is_number, static_cast<size_t>(max_digits));
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  size_t p = pos;
  if (t.byte(p) == ' ' && is_other(t.cls(p + 1, &len1))) ++p;
  if (is_other(t.cls(p, &len1))) {
    const size_t end = t.run(p, is_other);
    return t.run(end, [](uint8_t c) { return (c & kClassNewline) != 0; });
  }
  // `\s*[\r\n]+`: up to the last newline of the whitespace run.
  size_t last_newline_end = 0;
  int len;
  for (size_t q = pos; q < t.size();) {
    const uint8_t c = t.cls(q, &len);
    if (!is_space(c)) break;
    q += len;
    if (c & kClassNewline) last_newline_end = q;
  }
  if (last_newline_end != 0) return last_newline_end;
  return match_trailing_space(t, pos);
}

}  // namespace

SplitPattern gpt2_split_pattern() { return SplitPattern{SplitPatternKind::kGpt2, 0}; }

std::optional<SplitPattern> find_split_pattern(std::string_view regex) {
  if (regex == kGpt2SplitRegex) return gpt2_split_pattern();
  if (regex == kLlama3SplitRegex) return SplitPattern{SplitPatternKind::kCl100k, 3};
  if (regex == kQwen2SplitRegex) return SplitPattern{SplitPatternKind::kCl100k, 1};
  return std::nullopt;
}

void scan_split_pattern(const SplitPattern& pattern, std::string_view text,
                        std::vector<std::pair<size_t, size_t>>* pieces) {
  const Cursor cursor(text);
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = pattern.kind == SplitPatternKind::kGpt2
                           ? next_gpt2(cursor, pos)
                           : next_cl100k(cursor, pos, pattern.max_digits);
    pieces->emplace_back(pos, end);
    pos = end;
  }
}

}  // namespace tierserve::tokenizer

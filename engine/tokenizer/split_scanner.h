// Hand-written scanners for the pre-tokenizer Split regexes of GPT-2, Llama 3 and Qwen2.
//
// These patterns use `\s+(?!\S)`, a lookahead that RE2 lacks, so each known pattern is recognised
// by its exact source string and implemented as a scanner that reproduces the regex's
// leftmost-first alternation and backtracking. Character classes come from ICU: \p{L} is general
// category L*, \p{N} is N*, \s is the White_Space property.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace tierserve::tokenizer {

// The Split regex sources this build implements, exactly as tokenizer.json spells them.
// GPT-2's (ByteLevel's use_regex):
inline constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3's (tiktoken's cl100k; also GLM-4's):
inline constexpr std::string_view kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2's (cl100k with single digits):
inline constexpr std::string_view kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The family of a recognised Split pattern.
enum class SplitPatternKind {
  kGpt2,    // 's|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kCl100k,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|...
};

struct SplitPattern {
  SplitPatternKind kind = SplitPatternKind::kGpt2;
  int max_digits = 0;  // kCl100k: the N of \p{N}{1,N} (Llama 3: 3; Qwen2: 1)
};

// The GPT-2 pattern (also what ByteLevel's use_regex applies).
SplitPattern gpt2_split_pattern();

// The scanner for a regex source string exactly as written in tokenizer.json, or nullopt when the
// pattern is not one this build implements.
std::optional<SplitPattern> find_split_pattern(std::string_view regex);

// Appends the [begin, end) byte ranges of every regex match in `text` (valid UTF-8), in order, to
// `pieces`; the matches of these patterns tile the whole text.
void scan_split_pattern(const SplitPattern& pattern, std::string_view text,
                        std::vector<std::pair<size_t, size_t>>* pieces);

}  // namespace tierserve::tokenizer

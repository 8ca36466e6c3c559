// PreTokenizer: tokenizer.json's "pre_tokenizer": Split (the known regexes, see split_scanner.h,
// or a literal string; behavior Isolated), ByteLevel (add_prefix_space, use_regex), Metaspace
// (replacement, prepend_scheme, split) and Sequence of these.
#pragma once

#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/tokenizer/split_scanner.h"

namespace tierserve::tokenizer {

// A text and its pre-tokens as [begin, end) byte ranges into it (never empty, in order).
struct PreTokens {
  std::string text;
  std::vector<std::pair<size_t, size_t>> ranges;
};

class PreTokenizer {
 public:
  // Parses a "pre_tokenizer" object (null gives the identity); kUnimplemented names the type or
  // the regex this build lacks.
  static Result<PreTokenizer> from_json(const nlohmann::json& pre_tokenizer);

  // Splits `out->text` (one normalized segment between added tokens) into `out->ranges`.
  // `at_start` says the segment begins at offset 0 of the user's text (Metaspace "first").
  void pre_tokenize(PreTokens* out, bool at_start) const;

  // True when the last step is ByteLevel: the model then consumes raw bytes.
  bool ends_with_byte_level() const {
    return !steps_.empty() && steps_.back().kind == Kind::kByteLevel;
  }

 private:
  enum class Kind { kSplitRegex, kSplitString, kByteLevel, kMetaspace };
  struct Step {
    Kind kind;
    SplitPattern pattern;           // kSplitRegex; kByteLevel with use_regex
    std::string literal;            // kSplitString: the delimiter; kMetaspace: the replacement
    bool add_prefix_space = false;  // kByteLevel
    bool use_regex = false;         // kByteLevel
    int prepend_scheme = 0;         // kMetaspace: 0 never, 1 first, 2 always
    bool split = true;              // kMetaspace
  };
  static Status parse(const nlohmann::json& j, std::vector<Step>* steps);
  void apply(const Step& step, PreTokens* t, bool at_start) const;

  std::vector<Step> steps_;
};

}  // namespace tierserve::tokenizer

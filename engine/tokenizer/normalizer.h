// Normalizer: tokenizer.json's "normalizer" (NFC/NFD/NFKC/NFKD from ICU, Lowercase, Prepend,
// Replace with a literal pattern, Strip, and Sequence of these).
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tierserve::tokenizer {

class Normalizer {
 public:
  // Parses a "normalizer" object; kUnimplemented names a type this build lacks.
  static Result<Normalizer> from_json(const nlohmann::json& normalizer);

  // Normalizes `text` (valid UTF-8) in place.
  void normalize(std::string* text) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kPrepend, kReplace, kStrip };
  struct Step {
    Kind kind;
    std::string a;                     // kPrepend: the prefix; kReplace: the pattern
    std::string b;                     // kReplace: the replacement
    bool left = false, right = false;  // kStrip
  };
  static Status parse(const nlohmann::json& j, std::vector<Step>* steps);

  std::vector<Step> steps_;
};

}  // namespace tierserve::tokenizer

// PostProcessor: tokenizer.json's "post_processor" for single sequences: TemplateProcessing,
// BertProcessing / RobertaProcessing ([cls] A [sep]), ByteLevel (no effect on ids) and Sequence.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tierserve::tokenizer {

class PostProcessor {
 public:
  // Parses a "post_processor" object (null adds nothing).
  static Result<PostProcessor> from_json(const nlohmann::json& post_processor);

  // Wraps `ids` with the special tokens of the single-sequence template.
  void process(std::vector<int32_t>* ids) const;

  // A processor that adds exactly `prefix` and `suffix`.
  static PostProcessor with_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
    PostProcessor p;
    p.prefix_ = std::move(prefix);
    p.suffix_ = std::move(suffix);
    return p;
  }

  // The ids added before / after the sequence.
  const std::vector<int32_t>& prefix() const { return prefix_; }
  const std::vector<int32_t>& suffix() const { return suffix_; }

 private:
  static Status parse(const nlohmann::json& j, PostProcessor* p);

  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

}  // namespace tierserve::tokenizer

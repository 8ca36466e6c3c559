// Decoder: tokenizer.json's "decoder", turning token strings back into text: ByteLevel, Replace
// (literal), ByteFallback, Fuse, Strip, Metaspace and Sequence, each with the semantics of
// Hugging Face's decode_chain. Without a decoder, tokens are joined with spaces.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace tierserve::tokenizer {

class Decoder {
 public:
  // Parses a "decoder" object (null gives the join-with-spaces default).
  static Result<Decoder> from_json(const nlohmann::json& decoder);

  // The text of `tokens` (vocabulary strings); invalid UTF-8 becomes U+FFFD as in tokenizers.
  std::string decode(std::vector<std::string> tokens) const;

 private:
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  struct Step {
    Kind kind;
    std::string a;             // kReplace: pattern; kStrip: content; kMetaspace: replacement
    std::string b;             // kReplace: content
    int start = 0, stop = 0;   // kStrip
    bool strip_first = false;  // kMetaspace: prepend_scheme is not "never"
  };
  static Status parse(const nlohmann::json& j, std::vector<Step>* steps);

  std::vector<Step> steps_;
  bool present_ = false;
};

}  // namespace tierserve::tokenizer

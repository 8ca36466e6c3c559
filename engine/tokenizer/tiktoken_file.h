// tiktoken BPE files: the tokenizer.model of GLM-4 (ChatGLM4Tokenizer), one "<base64 bytes>
// <rank>" line per token. They are converted to the tokenizer.json that Hugging Face's
// TikTokenConverter makes of them, which HfTokenizer then runs.
#pragma once

#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tierserve::tokenizer {

// The cl100k-style pre-tokenizer pattern GLM-4's tokenizer uses (Llama 3's too).
extern const char* const kGlm4SplitPattern;

// Whether `head` (the first bytes of a tokenizer.model) looks like a tiktoken file rather than a
// SentencePiece protobuf: its first line is base64, one space, and a decimal rank.
bool looks_like_tiktoken(std::string_view head);

// tokenizer.json text for the tiktoken file `text` (named `file` in errors): a byte-level BPE
// whose vocabulary is every token (id = rank, in GPT-2's unicode form) and whose merges are, for
// each token in rank order, every split into two tokens (TikTokenConverter's rule, which gives
// tiktoken's merge order: the adjacent pair whose concatenation has the lowest rank first), with
// ignore_merges (tiktoken takes a pre-token that is itself a token whole); the pre-tokenizer splits
// by `pattern`, then ByteLevel; decoder ByteLevel. `added_tokens` (an array of tokenizer.json added
// tokens, possibly empty) is copied in. Errors (kDataLoss) name the file and line: bad base64, a
// bad or duplicate rank, a duplicate token, ranks that leave a gap, a missing single byte.
Result<std::string> tiktoken_to_tokenizer_json(std::string_view text, const std::string& file,
                                               std::string_view pattern,
                                               const nlohmann::json& added_tokens);

}  // namespace tierserve::tokenizer

// The prompts of a serving benchmark: random token sequences of given lengths (vLLM's `random`
// dataset), optionally behind a shared prefix that exercises the prefix cache, or prompts from a
// JSON-lines file (a `prompt` or `messages` field per line, or the OpenQA `question` and
// LongAlpaca `instruction` shapes).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve::bench {

struct BenchPrompt {
  std::string text;           // the prompt (completions) or the user message (chat)
  nlohmann::json messages;    // chat messages when the dataset gave them; else null
  int64_t input_tokens = 0;   // the dataset's count; 0 when unknown (usage tells)
  int32_t output_tokens = 0;  // max_tokens for this prompt
};

struct DatasetOptions {
  std::string name = "random";  // random | jsonl
  std::string path;             // jsonl: the file
  int64_t num_prompts = 1000;
  int32_t random_input_len = 1024;
  int32_t random_output_len = 128;
  double random_range_ratio = 0;   // lengths uniform in [len * (1 - r), len * (1 + r)], r in [0, 1)
  int32_t shared_prefix_len = 0;   // random: tokens of one prefix common to every prompt
  int32_t jsonl_output_len = 256;  // jsonl: max_tokens unless a line has max_tokens
  uint64_t seed = 0;
  const Tokenizer* tokenizer = nullptr;  // required for random; counts jsonl prompts when given
};

// num_prompts prompts (a jsonl file with fewer lines is cycled). Errors name the flag or the
// file and line at fault.
Result<std::vector<BenchPrompt>> make_dataset(const DatasetOptions& options);

}  // namespace tierserve::bench

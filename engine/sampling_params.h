// How one request samples and when it stops. Field meanings follow vLLM's SamplingParams.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/status.h"
#include "engine/model_config.h"

namespace tierserve {

// The most alternatives a request may ask log-probabilities for (vLLM's default limit).
inline constexpr int32_t kMaxTopLogprobs = 20;

// One token's log-probability under the raw distribution.
struct TopLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SamplingParams {
  double temperature = 1.0;         // 0 = greedy; otherwise logits are divided by it
  double top_p = 1.0;               // nucleus: smallest set with cumulative probability >= top_p
  int32_t top_k = 0;                // keep the k most likely tokens; 0 or -1 = all
  double min_p = 0.0;               // drop tokens with p < min_p * p(most likely)
  double repetition_penalty = 1.0;  // > 1 discourages tokens of the prompt and the output
  double presence_penalty = 0.0;    // subtracted once from tokens present in the output
  double frequency_penalty = 0.0;   // subtracted per occurrence in the output
  std::optional<uint64_t> seed;     // per-request generator seed; absent = engine's generator
  int32_t n = 1;                    // outputs generated from the prompt (parallel sampling)
  int32_t max_tokens = 16;          // generated tokens at most
  int32_t min_tokens = 0;           // EOS and stop tokens are suppressed until this many
  std::vector<int32_t> stop_token_ids;  // extra tokens that end generation (kept in the output)
  bool ignore_eos = false;              // do not stop at the model's EOS tokens
  // Log-probabilities to report with each new token: absent = none (the default, which spares a
  // softmax over the vocabulary per token); k >= 0 = the sampled token's raw log-probability
  // (log_softmax of the unprocessed logits, as vLLM reports by default) and those of the k most
  // likely tokens, k <= kMaxTopLogprobs.
  std::optional<int32_t> logprobs;

  // Checks ranges (temperature >= 0, 0 < top_p <= 1, top_k >= -1, 0 <= min_p <= 1,
  // repetition_penalty > 0, penalties in [-2, 2], 1 <= n <= 128, max_tokens >= 1, min_tokens <=
  // max_tokens, 0 <= logprobs <= 20), naming the offending field.
  Status validate() const;
  bool greedy() const { return temperature < 1e-5; }
};

// Which fields a request (or the command line) set explicitly.
struct SamplingFieldsGiven {
  bool temperature = false;
  bool top_p = false;
  bool top_k = false;
  bool min_p = false;
  bool repetition_penalty = false;
  bool max_tokens = false;
};

// Fills the fields the request did not give from the model's generation_config.json defaults
// (max_new_tokens becomes max_tokens), as vLLM's --generation-config auto does.
void apply_generation_defaults(const GenerationDefaults& defaults, const SamplingFieldsGiven& given,
                               SamplingParams* params);

}  // namespace tierserve

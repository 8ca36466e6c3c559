// Sampler: turns one sequence's logits into its next token, applying, in Hugging Face's order,
// repetition/presence/frequency penalties, temperature, top-k, top-p and min-p, then drawing from
// the result with the request's own generator (greedy takes the arg-max).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/sampling_params.h"

namespace tierserve {

struct SampledToken {
  int32_t token = 0;     // the chosen id
  float logprob = 0.0f;  // log-probability of `token` under the model's raw distribution
                         // (log_softmax of the unprocessed logits, as vLLM reports by default)
};

// One per sequence; not thread-safe. Scratch buffers are sized at construction (vocab_size).
class Sampler {
 public:
  // `default_seed` seeds the generator when params.seed is absent.
  Sampler(const SamplingParams& params, int32_t vocab_size, uint64_t default_seed);

  // Chooses the next token from `logits` (vocab_size f32; modified in place). `prompt` and
  // `output` are the sequence's tokens so far. `suppressed` tokens (EOS before min_tokens) get
  // probability zero.
  SampledToken sample(float* logits, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& output, const std::vector<int32_t>& suppressed);

 private:
  void apply_penalties(float* logits, const std::vector<int32_t>& prompt,
                       const std::vector<int32_t>& output);

  SamplingParams params_;
  int32_t vocab_size_;
  std::mt19937_64 rng_;
  std::vector<int32_t> counts_;          // per token: occurrences in the output
  std::vector<uint8_t> seen_;            // per token: present in prompt or output
  std::vector<int32_t> order_;           // candidate ids sorted by logit
  std::vector<float> probs_;             // copy of the raw logits
  std::vector<double> candidate_probs_;  // probabilities of order_'s candidates
};

}  // namespace tierserve

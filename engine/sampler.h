// Sampler: turns one sequence's logits into its next token, applying, in Hugging Face's order,
// repetition/presence/frequency penalties, temperature, top-k, top-p and min-p, then drawing from
// the result with the request's own generator (greedy takes the arg-max).
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "engine/sampling_params.h"
#include "kernels/sampling.h"

namespace tierserve {

struct SampledToken {
  int32_t token = 0;     // the chosen id
  float logprob = 0.0f;  // log-probability of `token` under the model's raw distribution
                         // (log_softmax of the unprocessed logits, as vLLM reports by default);
                         // computed only when the params ask for logprobs, else 0
  // The params.logprobs most likely tokens of the raw distribution, best first (ties by id).
  std::array<TopLogprob, kMaxTopLogprobs> top{};
  int32_t num_top = 0;
};

// One per engine, shared by all sequences, which keep their own parameters and generator. Not
// thread-safe. Scratch buffers are sized at construction (vocab_size), so sampling does not
// allocate.
class Sampler {
 public:
  explicit Sampler(int32_t vocab_size);

  // Chooses the next token from `logits` (vocab_size f32; modified in place) with the
  // sequence's `params` and generator `rng`. `prompt` and `output` are the sequence's tokens so
  // far. `suppressed` tokens (EOS before min_tokens) get probability zero.
  SampledToken sample(float* logits, const SamplingParams& params, std::mt19937_64& rng,
                      std::span<const int32_t> prompt, std::span<const int32_t> output,
                      std::span<const int32_t> suppressed);

 private:
  void apply_penalties(float* logits, const SamplingParams& params, std::span<const int32_t> prompt,
                       std::span<const int32_t> output);

  int32_t vocab_size_;
  std::vector<int32_t> counts_;  // per token: occurrences in the output
  std::vector<uint8_t> seen_;    // per token: present in prompt or output
  std::vector<int32_t> order_;   // ids sorted by raw logit (top logprobs)
  std::vector<float> probs_;     // copy of the raw logits
  SamplingScratch scratch_;      // choose_token's candidates
};

// The penalties Sampler::sample applies, as rows for Backend::apply_penalties: appends logits
// row `row`'s entry to `rows` and its distinct tokens to `tokens` (nothing when the params have no
// penalties and `suppressed` is empty). `entry` is scratch of vocabulary size holding -1, and is
// left so.
void collect_penalties(int32_t row, const SamplingParams& params, std::span<const int32_t> prompt,
                       std::span<const int32_t> output, std::span<const int32_t> suppressed,
                       std::vector<int32_t>& entry, std::vector<PenaltyRow>& rows,
                       std::vector<PenaltyToken>& tokens);

}  // namespace tierserve

// Drawing a token from processed logits with temperature, top-k, top-p and min-p, as Hugging
// Face orders them: the host reference (choose_token, which engine/sampler.cc and the default
// Backend::sample_rows both use) and the parameters a backend's own sampler takes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tierserve {

// One row to sample (Backend::sample_rows). Penalties and suppressed tokens are applied to the
// logits before (the engine samples rows that have them on the host).
struct SampleRow {
  int32_t row = 0;           // logits row
  double temperature = 1.0;  // > 0 (greedy rows take the arg-max instead)
  int32_t top_k = 0;         // keep the k most likely; 0 (or >= vocab): all
  double top_p = 1.0;        // keep the smallest prefix of that mass; 1: all
  double min_p = 0.0;        // drop tokens below min_p x the most likely; 0: none
  double uniform = 0.0;      // the draw in [0, 1), from the request's own generator
};

// Penalties of one logits row (Backend::apply_penalties), as the host sampler applies them:
// Hugging Face's repetition penalty over the prompt's and output's tokens, then OpenAI's presence
// and frequency penalties over the output's, then suppressed tokens (EOS before min_tokens) get
// -inf. The row's tokens are tokens[begin, end), each token once.
struct PenaltyRow {
  int32_t row = 0;             // logits row
  float repetition = 1.0f;     // 1: off
  float presence = 0.0f;       // subtracted once from every token the output holds
  float frequency = 0.0f;      // subtracted per occurrence in the output
  int32_t begin = 0, end = 0;  // the row's entries in the token array
};
struct PenaltyToken {
  int32_t token = 0;     // vocabulary id
  int32_t count = 0;     // occurrences in the output
  uint8_t seen = 0;      // in the prompt or the output (repetition penalty)
  uint8_t suppress = 0;  // gets -inf
};

// Applies row's penalties to `logits` (one row of the vocabulary) in place.
void apply_penalties(float* logits, const PenaltyRow& row, const PenaltyToken* tokens);

// Scratch for choose_token, sized for the vocabulary once.
struct SamplingScratch {
  explicit SamplingScratch(int32_t vocab_size)
      : order(static_cast<size_t>(vocab_size)), probs(static_cast<size_t>(vocab_size)) {}
  std::vector<int32_t> order;  // candidate ids by logit, descending (ties: lower id first)
  std::vector<double> probs;   // their probabilities
};

// The token drawn from `logits` (n entries): candidates sorted by logit (ties by id), the top_k
// of them softmaxed at the temperature (in double), cut to the smallest prefix reaching top_p,
// then to those at least min_p x the first; the draw is the first candidate whose cumulative
// probability exceeds uniform x the kept mass (the last kept one if rounding leaves none).
int32_t choose_token(const float* logits, int32_t n, const SampleRow& p, SamplingScratch& s);

}  // namespace tierserve

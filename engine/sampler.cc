#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace tierserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// log(sum(exp(logits))), computed in double for stability: log_softmax(logits)[t] is
// logits[t] - log_sum_exp.
double log_sum_exp(const float* logits, int32_t n) {
  const float max = *std::max_element(logits, logits + n);
  double sum = 0.0;
  for (int32_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i] - max));
  return static_cast<double>(max) + std::log(sum);
}

}  // namespace

Sampler::Sampler(int32_t vocab_size)
    : vocab_size_(vocab_size),
      counts_(static_cast<size_t>(vocab_size)),
      seen_(static_cast<size_t>(vocab_size)),
      order_(static_cast<size_t>(vocab_size)),
      probs_(static_cast<size_t>(vocab_size)),
      scratch_(vocab_size) {}

void Sampler::apply_penalties(float* logits, const SamplingParams& params,
                              std::span<const int32_t> prompt, std::span<const int32_t> output) {
  const bool rep = params.repetition_penalty != 1.0;
  const bool pres_freq = params.presence_penalty != 0.0 || params.frequency_penalty != 0.0;
  if (!rep && !pres_freq) return;
  std::fill(counts_.begin(), counts_.end(), 0);
  std::fill(seen_.begin(), seen_.end(), 0);
  for (int32_t t : prompt) seen_[static_cast<size_t>(t)] = 1;
  for (int32_t t : output) {
    seen_[static_cast<size_t>(t)] = 1;
    ++counts_[static_cast<size_t>(t)];
  }
  const float rp = static_cast<float>(params.repetition_penalty);
  for (int32_t i = 0; i < vocab_size_; ++i) {
    float& l = logits[i];
    // Hugging Face's RepetitionPenaltyLogitsProcessor over prompt and output tokens.
    if (rep && seen_[static_cast<size_t>(i)]) l = l > 0.0f ? l / rp : l * rp;
    // OpenAI's presence and frequency penalties over output tokens.
    int32_t c = counts_[static_cast<size_t>(i)];
    if (c > 0) {
      l -= static_cast<float>(params.frequency_penalty) * static_cast<float>(c) +
           static_cast<float>(params.presence_penalty);
    }
  }
}

SampledToken Sampler::sample(float* logits, const SamplingParams& params, std::mt19937_64& rng,
                             std::span<const int32_t> prompt, std::span<const int32_t> output,
                             std::span<const int32_t> suppressed) {
  const int32_t n = vocab_size_;
  // The reported log-probability is of the raw distribution; remember it before processing.
  const bool want_logprob = params.logprobs.has_value();
  std::vector<float>& raw = probs_;
  if (want_logprob) std::copy(logits, logits + n, raw.begin());

  apply_penalties(logits, params, prompt, output);
  for (int32_t t : suppressed) {
    if (t >= 0 && t < n) logits[t] = kNegInf;
  }

  int32_t token;
  if (params.greedy()) {
    token = static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
  } else {
    // The draw as uniform_real_distribution(0, mass) makes it: mass x a canonical double.
    SampleRow row;
    row.temperature = params.temperature;
    row.top_k = params.top_k;
    row.top_p = params.top_p;
    row.min_p = params.min_p;
    row.uniform = std::generate_canonical<double, std::numeric_limits<double>::digits>(rng);
    token = choose_token(logits, n, row, scratch_);
  }
  SampledToken out;
  out.token = token;
  if (want_logprob) {
    const double lse = log_sum_exp(raw.data(), n);
    out.logprob = static_cast<float>(static_cast<double>(raw[static_cast<size_t>(token)]) - lse);
    out.num_top = std::min(*params.logprobs, std::min(kMaxTopLogprobs, n));
    if (out.num_top > 0) {
      std::iota(order_.begin(), order_.end(), 0);
      std::partial_sort(order_.begin(), order_.begin() + out.num_top, order_.end(),
                        [&raw](int32_t a, int32_t b) {
                          const float la = raw[static_cast<size_t>(a)];
                          const float lb = raw[static_cast<size_t>(b)];
                          return la > lb || (la == lb && a < b);
                        });
      for (int32_t i = 0; i < out.num_top; ++i) {
        const int32_t t = order_[static_cast<size_t>(i)];
        out.top[static_cast<size_t>(i)] = {
            t, static_cast<float>(static_cast<double>(raw[static_cast<size_t>(t)]) - lse)};
      }
    }
  }
  return out;
}

void collect_penalties(int32_t row, const SamplingParams& params, std::span<const int32_t> prompt,
                       std::span<const int32_t> output, std::span<const int32_t> suppressed,
                       std::vector<int32_t>& entry, std::vector<PenaltyRow>& rows,
                       std::vector<PenaltyToken>& tokens) {
  const bool rep = params.repetition_penalty != 1.0;
  const bool pres_freq = params.presence_penalty != 0.0 || params.frequency_penalty != 0.0;
  if (!rep && !pres_freq && suppressed.empty()) return;
  PenaltyRow r;
  r.row = row;
  r.repetition = static_cast<float>(params.repetition_penalty);
  r.presence = static_cast<float>(params.presence_penalty);
  r.frequency = static_cast<float>(params.frequency_penalty);
  r.begin = static_cast<int32_t>(tokens.size());
  const int32_t vocab = static_cast<int32_t>(entry.size());
  auto at = [&](int32_t token) -> PenaltyToken& {
    int32_t& e = entry[static_cast<size_t>(token)];
    if (e < 0) {
      e = static_cast<int32_t>(tokens.size());
      tokens.push_back({token, 0, 0, 0});
    }
    return tokens[static_cast<size_t>(e)];
  };
  if (rep) {
    for (int32_t t : prompt) at(t).seen = 1;
  }
  if (rep || pres_freq) {
    for (int32_t t : output) {
      PenaltyToken& p = at(t);
      p.seen = 1;
      ++p.count;
    }
  }
  for (int32_t t : suppressed) {
    if (t >= 0 && t < vocab) at(t).suppress = 1;
  }
  r.end = static_cast<int32_t>(tokens.size());
  for (int32_t i = r.begin; i < r.end; ++i) {
    entry[static_cast<size_t>(tokens[static_cast<size_t>(i)].token)] = -1;
  }
  rows.push_back(r);
}

}  // namespace tierserve

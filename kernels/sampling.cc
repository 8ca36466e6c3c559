#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/check.h"

namespace tierserve {

void apply_penalties(float* logits, const PenaltyRow& row, const PenaltyToken* tokens) {
  for (int32_t i = row.begin; i < row.end; ++i) {
    const PenaltyToken& t = tokens[i];
    float& l = logits[t.token];
    if (row.repetition != 1.0f && t.seen) l = l > 0.0f ? l / row.repetition : l * row.repetition;
    if (t.count > 0) l -= row.frequency * static_cast<float>(t.count) + row.presence;
    if (t.suppress) l = -std::numeric_limits<float>::infinity();
  }
}

int32_t choose_token(const float* logits, int32_t n, const SampleRow& p, SamplingScratch& s) {
  TS_CHECK(n > 0 && static_cast<size_t>(n) <= s.order.size() && p.temperature > 0.0)
      << "choose_token over " << n << " logits at temperature " << p.temperature;
  const float inv_t = static_cast<float>(1.0 / p.temperature);
  std::vector<int32_t>& order = s.order;
  std::iota(order.begin(), order.begin() + n, 0);
  int32_t k = n;
  if (p.top_k > 0 && p.top_k < n) k = p.top_k;
  auto by_logit = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.begin() + n, by_logit);
  // Softmax over the top-k candidates with temperature.
  const float max = logits[order[0]] * inv_t;
  std::vector<double>& prob = s.probs;
  double sum = 0.0;
  for (int32_t i = 0; i < k; ++i) {
    prob[static_cast<size_t>(i)] = std::exp(static_cast<double>(logits[order[i]] * inv_t - max));
    sum += prob[static_cast<size_t>(i)];
  }
  for (int32_t i = 0; i < k; ++i) prob[static_cast<size_t>(i)] /= sum;
  // top-p: the smallest prefix whose mass reaches top_p (at least one token).
  int32_t keep = k;
  if (p.top_p < 1.0) {
    double cum = 0.0;
    for (int32_t i = 0; i < k; ++i) {
      cum += prob[static_cast<size_t>(i)];
      if (cum >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  // min-p: drop tokens below min_p times the most likely one.
  if (p.min_p > 0.0) {
    const double floor = p.min_p * prob[0];
    while (keep > 1 && prob[static_cast<size_t>(keep - 1)] < floor) --keep;
  }
  double mass = 0.0;
  for (int32_t i = 0; i < keep; ++i) mass += prob[static_cast<size_t>(i)];
  double u = p.uniform * mass;
  for (int32_t i = 0; i < keep; ++i) {
    u -= prob[static_cast<size_t>(i)];
    if (u < 0.0) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(keep - 1)];
}

}  // namespace tierserve

#include "engine/alibi.h"

#include <cmath>

#include "common/check.h"

namespace tierserve {
namespace {

// s^(h + 1) for h < n, s = 2^(-8 / n), n a power of two; in double, then rounded once, as
// Python's float arithmetic does before torch stores the slopes as f32.
std::vector<double> power_of_two_slopes(int32_t n) {
  const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3)));
  std::vector<double> slopes;
  for (int32_t h = 0; h < n; ++h) slopes.push_back(start * std::pow(start, h));
  return slopes;
}

std::vector<double> slopes_for(int32_t n) {
  const int32_t closest = 1 << static_cast<int32_t>(std::floor(std::log2(static_cast<double>(n))));
  if (closest == n) return power_of_two_slopes(n);
  std::vector<double> slopes = power_of_two_slopes(closest);
  const std::vector<double> extra = slopes_for(2 * closest);
  for (int32_t i = 0; i < n - closest; ++i) slopes.push_back(extra[static_cast<size_t>(2 * i)]);
  return slopes;
}

}  // namespace

std::vector<float> alibi_slopes(int32_t num_heads) {
  TS_CHECK(num_heads > 0) << "alibi slopes for " << num_heads << " heads";
  std::vector<float> out;
  for (double s : slopes_for(num_heads)) out.push_back(static_cast<float>(s));
  return out;
}

}  // namespace tierserve

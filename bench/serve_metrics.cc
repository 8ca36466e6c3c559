#include "bench/serve_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tierserve::bench {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Distribution distribution_ms(const std::vector<double>& values_s,
                             const std::vector<double>& percentiles) {
  Distribution d;
  d.count = static_cast<int64_t>(values_s.size());
  for (double p : percentiles) d.percentiles[p] = 0;
  if (values_s.empty()) return d;
  std::vector<double> ms(values_s.size());
  std::transform(values_s.begin(), values_s.end(), ms.begin(), [](double s) { return s * 1e3; });
  const double n = static_cast<double>(ms.size());
  d.mean = std::accumulate(ms.begin(), ms.end(), 0.0) / n;
  double var = 0;
  for (double v : ms) var += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(var / n);
  d.median = percentile(ms, 50);
  for (double p : percentiles) d.percentiles[p] = percentile(ms, p);
  return d;
}

ServeSummary summarize(const std::vector<RequestRecord>& records, double duration_s,
                       const std::vector<double>& percentiles) {
  ServeSummary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& r : records) {
    if (!r.success) {
      ++s.failed;
      ++s.errors[r.error_class];
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2el.push_back(r.latency_s);
    if (r.output_tokens > 1) {
      tpot.push_back((r.latency_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_s;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_s;
  }
  s.ttft_ms = distribution_ms(ttft, percentiles);
  s.tpot_ms = distribution_ms(tpot, percentiles);
  s.itl_ms = distribution_ms(itl, percentiles);
  s.e2el_ms = distribution_ms(e2el, percentiles);
  return s;
}

}  // namespace tierserve::bench

// What `tierserve bench serve` prints and writes: the final table (vLLM's layout), the result
// file (vLLM's key names, plus every request's timings and the samples over time), the summary
// table of a concurrency sweep, and the progress line.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/load_generator.h"
#include "bench/serve_metrics.h"
#include "common/status.h"

namespace tierserve::bench {

// What the run was, for the table and the result file.
struct RunDescription {
  std::string base_url, endpoint, model, dataset;
  int32_t max_concurrency = 0;  // 0 = none
  double request_rate = 0;      // inf = all at once
  double duration_s = 0, ramp_up_s = 0;
  int64_t num_prompts = 0;
};

// The "Serving Benchmark Result" table.
std::string format_result_table(const RunDescription& run, const ServeSummary& s,
                                const std::vector<double>& percentiles);
// vLLM's result keys (completed, request_throughput, output_throughput, mean_ttft_ms,
// median_ttft_ms, std_ttft_ms, p99_ttft_ms, ... for ttft, tpot, itl and e2el), the run's
// settings, per-request arrays (input_lens, output_lens, ttfts, itls, start_times, errors) and
// the samples.
nlohmann::json result_json(const RunDescription& run, const ServeSummary& s, const LoadResult& load,
                           const std::vector<double>& percentiles);
// One row per concurrency level of a sweep.
std::string format_sweep_table(const std::vector<std::pair<int32_t, ServeSummary>>& rows);
// "[  12.5s] 45 done, 2 failed, 8 in flight, 312.4 tok/s".
std::string progress_line(const LoadSample& s);

// Writes `j` to `path` (--result-json), invalid UTF-8 from a server replaced rather than fatal.
Status write_result_json(const std::string& path, const nlohmann::json& j);
// A `tierserve bench` subcommand's exit status: 0, or 1 after a one-line error on stderr.
int exit_status(const Status& s);

}  // namespace tierserve::bench

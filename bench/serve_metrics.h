// The figures of a serving benchmark (`tierserve bench serve`), as vLLM's `bench serve` defines
// them: per request, time to first token (TTFT: the first chunk that carries content), time per
// output token after the first (TPOT = (latency - TTFT) / (output tokens - 1)), inter-token
// latencies (ITL: the gaps between content chunks) and end-to-end latency (E2EL); over the run,
// throughputs and distributions (mean, median, population standard deviation, percentiles with
// linear interpolation as numpy.percentile computes them).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tierserve::bench {

// One request as the load generator saw it. Times in seconds.
struct RequestRecord {
  bool success = false;
  std::string error_class;     // when !success: "connect", "http_503", "timeout", "stream", ...
  std::string error;           // when !success: what went wrong, for the result file
  double start_s = 0;          // when it was sent, since the run's start
  double ttft_s = 0;           // first content chunk, since start_s (success only)
  double latency_s = 0;        // last byte, since start_s
  std::vector<double> itl_s;   // gaps between consecutive content chunks
  int64_t prompt_tokens = 0;   // from the usage chunk, else the dataset's count
  int64_t output_tokens = 0;   // from the usage chunk, else the number of content chunks
  std::string generated_text;  // the content, concatenated
};

// A distribution in milliseconds.
struct Distribution {
  int64_t count = 0;
  double mean = 0, median = 0, std = 0;  // 0 when count is 0
  std::map<double, double> percentiles;  // percentile (e.g. 99) -> value
};

// The run's figures (vLLM's result keys in to_json, bench/report.h).
struct ServeSummary {
  double duration_s = 0;
  int64_t completed = 0, failed = 0;
  int64_t total_input_tokens = 0, total_output_tokens = 0;  // of completed requests
  double request_throughput = 0;                            // completed requests / duration
  double output_throughput = 0;                             // output tokens / duration
  double total_token_throughput = 0;                        // (input + output tokens) / duration
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
  std::map<std::string, int64_t> errors;  // error class -> count
};

// numpy.percentile(values, p) with linear interpolation, p in [0, 100]; 0 for no values.
double percentile(std::vector<double> values, double p);
// Mean, median, population std and the given percentiles of `values_s` (seconds), in ms.
Distribution distribution_ms(const std::vector<double>& values_s,
                             const std::vector<double>& percentiles);
// The figures of `records` over a run of `duration_s` seconds (> 0).
ServeSummary summarize(const std::vector<RequestRecord>& records, double duration_s,
                       const std::vector<double>& percentiles);

}  // namespace tierserve::bench

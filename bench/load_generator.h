// Drives a serving benchmark: sends the dataset's prompts to the server, either a fixed number
// (--num-prompts) or for a fixed time (--duration, cycling through the prompts), with at most
// --max-concurrency requests in flight (a closed loop) and/or at --request-rate requests per
// second (Poisson arrivals; infinite = all at once). During --ramp-up the concurrency limit and
// the rate grow linearly from their smallest values to the full ones, as in BentoML's study.
// Every --sample-interval the load is sampled (throughput over time). Each worker thread keeps
// one keep-alive connection.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "bench/datasets.h"
#include "bench/http_stream.h"
#include "bench/serve_metrics.h"

namespace tierserve::bench {

// Requests in flight at most when LoadOptions::max_concurrency is 0 (each takes a thread and a
// connection).
inline constexpr int32_t kMaxInFlight = 1024;

struct LoadOptions {
  int32_t max_concurrency = 0;  // 0: kMaxInFlight
  double request_rate = std::numeric_limits<double>::infinity();
  int64_t num_prompts = 0;  // requests to send when duration_s == 0
  double duration_s = 0;    // > 0: send for this long
  double ramp_up_s = 0;
  double sample_interval_s = 5;
  uint64_t seed = 0;
};

// The load at one moment, and what happened since the previous sample.
struct LoadSample {
  double t_s = 0;                     // since the run's start
  int32_t in_flight = 0;              // requests sent and not finished
  int32_t concurrency_limit = 0;      // 0 = none
  int64_t completed = 0, failed = 0;  // in all, so far
  double request_throughput = 0;      // completed requests per second in the interval
  double output_throughput = 0;       // their output tokens per second
  double mean_ttft_ms = 0;            // their mean TTFT; 0 when none completed
};

struct LoadResult {
  std::vector<RequestRecord> records;  // in completion order
  std::vector<LoadSample> samples;
  double duration_s = 0;  // first send to last completion
};

// Sends one prompt on `connection` and returns its record (start_s is filled in by run_load).
using SendFn = std::function<RequestRecord(const BenchPrompt&, StreamingConnection& connection)>;
// Called about twice a second (and at the end) with the latest sample, for a progress line.
using ProgressFn = std::function<void(const LoadSample&, bool final)>;

// Runs the load; `make_connection` gives each worker its connection. Returns once every request
// sent has finished.
LoadResult run_load(const std::vector<BenchPrompt>& prompts, const LoadOptions& options,
                    const std::function<std::unique_ptr<StreamingConnection>()>& make_connection,
                    const SendFn& send, const ProgressFn& progress);

}  // namespace tierserve::bench

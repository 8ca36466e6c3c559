// Metrics: the serving counters, gauges and histograms behind GET /metrics, rendered in the
// Prometheus text format (0.0.4) with vLLM's metric names and labels (model_name, engine="0"),
// so that vLLM's dashboards and scrapers work unchanged, plus tierserve's own tier metrics.
//
// Thread-safe: every method may be called from any thread (one mutex; updates are rare and
// tiny next to a forward step).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace tierserve {

// Directions of tier traffic, for tierserve:tier_bytes_total{direction}.
enum class TierDirection {
  kHostToDevice,  // "host_to_device"
  kDeviceToHost,  // "device_to_host"
  kDiskToHost,    // "disk_to_host"
  kHostToDisk,    // "host_to_disk"
  kDiskToDevice,  // "disk_to_device" (weights read with O_DIRECT into device staging)
};
inline constexpr int kNumTierDirections = 5;
const char* tier_direction_name(TierDirection direction);

// Tiers, for tierserve:kv_blocks{tier}.
enum class Tier { kDevice, kHost, kDisk };
inline constexpr int kNumTiers = 3;
const char* tier_name(Tier tier);

// A cumulative histogram with fixed upper bounds (Prometheus semantics: a value v falls in every
// bucket whose bound is >= v; +Inf is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // counts()[i]: observations <= bounds()[i] (cumulative); count(): all observations.
  std::vector<uint64_t> cumulative_counts() const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;    // ascending
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = above every bound
  uint64_t count_ = 0;
  double sum_ = 0;
};

// vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
const std::vector<double>& time_to_first_token_buckets();
const std::vector<double>& inter_token_latency_buckets();
const std::vector<double>& request_latency_buckets();  // e2e latency and queue time

// State read from the engine (on its thread, or between steps) and pushed with
// Metrics::record_engine(). Totals are cumulative since start; a total lower than the one
// recorded before is ignored (counters never go down).
struct EngineMetricsSnapshot {
  int64_t num_requests_running = 0;
  int64_t num_requests_waiting = 0;
  double kv_cache_usage = 0;                        // device-tier KV blocks in use / all, in [0, 1]
  int64_t num_preemptions_total = 0;                // EngineStats::preemptions
  int64_t prefix_cache_queries_total = 0;           // prompt tokens looked up in the prefix cache
  int64_t prefix_cache_hits_total = 0;              // of which found
  std::array<int64_t, kNumTiers> kv_blocks_used{};  // by Tier
  std::array<int64_t, kNumTiers> kv_blocks_capacity{};          // by Tier (0 = tier absent)
  std::array<uint64_t, kNumTierDirections> tier_bytes_total{};  // by TierDirection
  double weight_stream_stall_seconds_total = 0;  // compute waiting on streamed weights
};

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Gauges and engine-side totals.
  void record_engine(const EngineMetricsSnapshot& snapshot);

  // Per-request updates from the server threads.
  void add_prompt_tokens(int64_t tokens);
  void add_generation_tokens(int64_t tokens);
  // A finished request: finished_reason "stop", "length", "abort" or "error" (others are
  // counted under their own label).
  void inc_request_success(std::string_view finished_reason);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_e2e_request_latency(double seconds);
  void observe_request_queue_time(double seconds);

  // The exposition text: for each metric "# HELP" and "# TYPE" lines, then its samples, each
  // labelled model_name="<model_name>",engine="0"; counters end in _total, histograms have
  // _bucket{le="..."} (cumulative, ending in +Inf), _sum and _count.
  std::string render(std::string_view model_name) const;

 private:
  mutable std::mutex mutex_;
  EngineMetricsSnapshot engine_;
  int64_t prompt_tokens_ = 0;
  int64_t generation_tokens_ = 0;
  std::map<std::string, int64_t, std::less<>> request_success_;  // by finished_reason
  Histogram time_to_first_token_;
  Histogram inter_token_latency_;
  Histogram e2e_request_latency_;
  Histogram request_queue_time_;
};

// A number as the Prometheus Python client writes it: "1.0", "0.25", "+Inf", "NaN".
std::string format_metric_value(double value);

}  // namespace tierserve

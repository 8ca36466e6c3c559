#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/check.h"

namespace tierserve {
namespace {

// Label values escape backslash, double quote and newline (the text format's rule).
std::string escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Builds the exposition text.
class Writer {
 public:
  explicit Writer(std::string_view model_name)
      : labels_("model_name=\"" + escape_label(model_name) + "\",engine=\"0\"") {}

  void header(const std::string& name, const char* type, const char* help) {
    text_ += "# HELP " + name + " " + help + "\n";
    text_ += "# TYPE " + name + " " + type + "\n";
  }
  // One sample; `extra` is additional labels ("k=\"v\"") or "".
  void sample(const std::string& name, const std::string& extra, double value) {
    text_ += name + "{" + labels_;
    if (!extra.empty()) text_ += "," + extra;
    text_ += "} " + format_metric_value(value) + "\n";
  }
  void gauge(const std::string& name, const char* help, double value) {
    header(name, "gauge", help);
    sample(name, "", value);
  }
  // `name` without the _total suffix, which is added (as the Python client does).
  void counter(const std::string& name, const char* help, double value) {
    header(name + "_total", "counter", help);
    sample(name + "_total", "", value);
  }
  void histogram(const std::string& name, const char* help, const Histogram& h) {
    header(name, "histogram", help);
    const std::vector<uint64_t> cumulative = h.cumulative_counts();
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      sample(name + "_bucket", "le=\"" + format_metric_value(h.bounds()[i]) + "\"",
             static_cast<double>(cumulative[i]));
    }
    sample(name + "_bucket", "le=\"+Inf\"", static_cast<double>(h.count()));
    sample(name + "_sum", "", h.sum());
    sample(name + "_count", "", static_cast<double>(h.count()));
  }

  std::string take() { return std::move(text_); }

 private:
  std::string labels_;
  std::string text_;
};

}  // namespace

const char* tier_direction_name(TierDirection direction) {
  switch (direction) {
    case TierDirection::kHostToDevice:
      return "host_to_device";
    case TierDirection::kDeviceToHost:
      return "device_to_host";
    case TierDirection::kDiskToHost:
      return "disk_to_host";
    case TierDirection::kHostToDisk:
      return "host_to_disk";
    case TierDirection::kDiskToDevice:
      return "disk_to_device";
  }
  return "unknown";
}

const char* tier_name(Tier tier) {
  switch (tier) {
    case Tier::kDevice:
      return "device";
    case Tier::kHost:
      return "host";
    case Tier::kDisk:
      return "disk";
  }
  return "unknown";
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  TS_CHECK(std::is_sorted(bounds_.begin(), bounds_.end())) << "histogram bounds must ascend";
}

void Histogram::observe(double value) {
  // A value equal to a bound belongs to that bound's bucket (le = "less or equal").
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[bucket];
  ++count_;
  sum_ += value;
}

std::vector<uint64_t> Histogram::cumulative_counts() const {
  std::vector<uint64_t> cumulative(bounds_.size());
  uint64_t running = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    running += counts_[i];
    cumulative[i] = running;
  }
  return cumulative;
}

const std::vector<double>& time_to_first_token_buckets() {
  static const std::vector<double> kBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                               0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                               20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return kBuckets;
}

const std::vector<double>& inter_token_latency_buckets() {
  static const std::vector<double> kBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                               0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                               7.5,  10.0,  20.0, 40.0,  80.0};
  return kBuckets;
}

const std::vector<double>& request_latency_buckets() {
  static const std::vector<double> kBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                               5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return kBuckets;
}

std::string format_metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return std::to_string(static_cast<int64_t>(value)) + ".0";
  }
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  TS_CHECK(ec == std::errc()) << "to_chars failed";
  return std::string(buffer, end);
}

Metrics::Metrics()
    : time_to_first_token_(time_to_first_token_buckets()),
      inter_token_latency_(inter_token_latency_buckets()),
      e2e_request_latency_(request_latency_buckets()),
      request_queue_time_(request_latency_buckets()) {
  for (const char* reason : {"stop", "length", "abort", "error"}) request_success_[reason] = 0;
}

void Metrics::record_engine(const EngineMetricsSnapshot& s) {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineMetricsSnapshot& e = engine_;
  e.num_requests_running = s.num_requests_running;
  e.num_requests_waiting = s.num_requests_waiting;
  e.kv_cache_usage = s.kv_cache_usage;
  e.kv_blocks_used = s.kv_blocks_used;
  e.kv_blocks_capacity = s.kv_blocks_capacity;
  // Counters never go down.
  e.num_preemptions_total = std::max(e.num_preemptions_total, s.num_preemptions_total);
  e.prefix_cache_queries_total =
      std::max(e.prefix_cache_queries_total, s.prefix_cache_queries_total);
  e.prefix_cache_hits_total = std::max(e.prefix_cache_hits_total, s.prefix_cache_hits_total);
  for (int i = 0; i < kNumTierDirections; ++i) {
    e.tier_bytes_total[i] = std::max(e.tier_bytes_total[i], s.tier_bytes_total[i]);
  }
  e.weight_stream_stall_seconds_total =
      std::max(e.weight_stream_stall_seconds_total, s.weight_stream_stall_seconds_total);
}

void Metrics::add_prompt_tokens(int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += std::max<int64_t>(tokens, 0);
}

void Metrics::add_generation_tokens(int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  generation_tokens_ += std::max<int64_t>(tokens, 0);
}

void Metrics::inc_request_success(std::string_view finished_reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = request_success_.find(finished_reason);
  if (it == request_success_.end()) {
    it = request_success_.emplace(std::string(finished_reason), 0).first;
  }
  ++it->second;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  time_to_first_token_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  inter_token_latency_.observe(seconds);
}

void Metrics::observe_e2e_request_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  e2e_request_latency_.observe(seconds);
}

void Metrics::observe_request_queue_time(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  request_queue_time_.observe(seconds);
}

std::string Metrics::render(std::string_view model_name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const EngineMetricsSnapshot& e = engine_;
  Writer w(model_name);
  w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
          static_cast<double>(e.num_requests_running));
  w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
          static_cast<double>(e.num_requests_waiting));
  w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
          e.kv_cache_usage);
  w.counter("vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            static_cast<double>(e.prefix_cache_queries_total));
  w.counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
            static_cast<double>(e.prefix_cache_hits_total));
  w.counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
            static_cast<double>(e.num_preemptions_total));
  w.counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
            static_cast<double>(prompt_tokens_));
  w.counter("vllm:generation_tokens", "Number of generation tokens processed.",
            static_cast<double>(generation_tokens_));
  w.header("vllm:request_success_total", "counter", "Count of successfully processed requests.");
  for (const auto& [reason, count] : request_success_) {
    w.sample("vllm:request_success_total", "finished_reason=\"" + escape_label(reason) + "\"",
             static_cast<double>(count));
  }
  w.histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
              time_to_first_token_);
  w.histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
              inter_token_latency_);
  w.histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
              e2e_request_latency_);
  w.histogram("vllm:request_queue_time_seconds",
              "Histogram of time spent in WAITING phase for request.", request_queue_time_);

  w.header("tierserve:tier_bytes_total", "counter",
           "Bytes moved between memory tiers, by direction.");
  for (int i = 0; i < kNumTierDirections; ++i) {
    w.sample(
        "tierserve:tier_bytes_total",
        std::string("direction=\"") + tier_direction_name(static_cast<TierDirection>(i)) + "\"",
        static_cast<double>(e.tier_bytes_total[i]));
  }
  w.counter("tierserve:weight_stream_stall_seconds",
            "Seconds compute waited for streamed weight layers to arrive.",
            e.weight_stream_stall_seconds_total);
  w.header("tierserve:kv_blocks", "gauge", "KV-cache blocks in use, by tier.");
  for (int i = 0; i < kNumTiers; ++i) {
    w.sample("tierserve:kv_blocks", std::string("tier=\"") + tier_name(static_cast<Tier>(i)) + "\"",
             static_cast<double>(e.kv_blocks_used[i]));
  }
  w.header("tierserve:kv_blocks_capacity", "gauge", "KV-cache blocks available, by tier.");
  for (int i = 0; i < kNumTiers; ++i) {
    w.sample("tierserve:kv_blocks_capacity",
             std::string("tier=\"") + tier_name(static_cast<Tier>(i)) + "\"",
             static_cast<double>(e.kv_blocks_capacity[i]));
  }
  return w.take();
}

}  // namespace tierserve

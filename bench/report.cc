#include "bench/report.h"

#include <cmath>
#include <cstdio>
#include <fstream>

namespace tierserve::bench {
namespace {

using Json = nlohmann::json;

std::string line(const char* label, const std::string& value) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "%-40s %s\n", label, value.c_str());
  return buf;
}
std::string num(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}
std::string title(const std::string& t, char fill) {
  const size_t width = 50;
  const size_t left = t.size() >= width ? 0 : (width - t.size()) / 2;
  const size_t right = t.size() >= width ? 0 : width - t.size() - left;
  return std::string(left, fill) + t + std::string(right, fill) + "\n";
}
// "99" for 99.0, "99.9" for 99.9: vLLM's key and label form.
std::string pct_name(double p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", p);
  return buf;
}

struct Metric {
  const char* key;    // ttft
  const char* label;  // TTFT
  const char* heading;
  const Distribution* d;
};

std::vector<Metric> metrics_of(const ServeSummary& s) {
  return {{"ttft", "TTFT", "Time to First Token", &s.ttft_ms},
          {"tpot", "TPOT", "Time per Output Token (excl. 1st token)", &s.tpot_ms},
          {"itl", "ITL", "Inter-token Latency", &s.itl_ms},
          {"e2el", "E2EL", "End-to-end Latency", &s.e2el_ms}};
}

}  // namespace

std::string format_result_table(const RunDescription& run, const ServeSummary& s,
                                const std::vector<double>& percentiles) {
  std::string out = title(" Serving Benchmark Result ", '=');
  out += line("Successful requests:", std::to_string(s.completed));
  out += line("Failed requests:", std::to_string(s.failed));
  for (const auto& [cls, n] : s.errors) {
    out += line(("  " + cls + ":").c_str(), std::to_string(n));
  }
  if (run.max_concurrency > 0) {
    out += line("Maximum request concurrency:", std::to_string(run.max_concurrency));
  }
  if (std::isfinite(run.request_rate)) out += line("Request rate (req/s):", num(run.request_rate));
  out += line("Benchmark duration (s):", num(s.duration_s));
  out += line("Total input tokens:", std::to_string(s.total_input_tokens));
  out += line("Total generated tokens:", std::to_string(s.total_output_tokens));
  out += line("Request throughput (req/s):", num(s.request_throughput));
  out += line("Output token throughput (tok/s):", num(s.output_throughput));
  out += line("Total Token throughput (tok/s):", num(s.total_token_throughput));
  for (const Metric& m : metrics_of(s)) {
    out += title(m.heading, '-');
    out += line((std::string("Mean ") + m.label + " (ms):").c_str(), num(m.d->mean));
    out += line((std::string("Median ") + m.label + " (ms):").c_str(), num(m.d->median));
    for (double p : percentiles) {
      out +=
          line(("P" + pct_name(p) + " " + m.label + " (ms):").c_str(), num(m.d->percentiles.at(p)));
    }
  }
  out += std::string(50, '=') + "\n";
  return out;
}

Json result_json(const RunDescription& run, const ServeSummary& s, const LoadResult& load,
                 const std::vector<double>& percentiles) {
  Json j;
  j["backend"] = "openai";
  j["base_url"] = run.base_url;
  j["endpoint"] = run.endpoint;
  j["model_id"] = run.model;
  j["dataset"] = run.dataset;
  j["num_prompts"] = run.num_prompts;
  j["max_concurrency"] = run.max_concurrency > 0 ? Json(run.max_concurrency) : Json(nullptr);
  j["request_rate"] = std::isfinite(run.request_rate) ? Json(run.request_rate) : Json("inf");
  j["duration_limit_s"] = run.duration_s;
  j["ramp_up_s"] = run.ramp_up_s;
  j["duration"] = s.duration_s;
  j["completed"] = s.completed;
  j["failed"] = s.failed;
  j["error_classes"] = s.errors;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["request_throughput"] = s.request_throughput;
  j["output_throughput"] = s.output_throughput;
  j["total_token_throughput"] = s.total_token_throughput;
  for (const Metric& m : metrics_of(s)) {
    const std::string k = m.key;
    j["mean_" + k + "_ms"] = m.d->mean;
    j["median_" + k + "_ms"] = m.d->median;
    j["std_" + k + "_ms"] = m.d->std;
    for (double p : percentiles) j["p" + pct_name(p) + "_" + k + "_ms"] = m.d->percentiles.at(p);
  }
  Json input_lens = Json::array(), output_lens = Json::array(), ttfts = Json::array(),
       itls = Json::array(), e2els = Json::array(), starts = Json::array(), errors = Json::array();
  for (const RequestRecord& r : load.records) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttfts.push_back(r.success ? r.ttft_s : 0.0);
    itls.push_back(r.itl_s);
    e2els.push_back(r.latency_s);
    starts.push_back(r.start_s);
    errors.push_back(r.success ? std::string() : r.error_class + ": " + r.error);
  }
  j["input_lens"] = input_lens;
  j["output_lens"] = output_lens;
  j["ttfts"] = ttfts;
  j["itls"] = itls;
  j["e2els"] = e2els;
  j["start_times"] = starts;
  j["errors"] = errors;
  Json samples = Json::array();
  for (const LoadSample& x : load.samples) {
    samples.push_back({{"t_s", x.t_s},
                       {"in_flight", x.in_flight},
                       {"concurrency_limit", x.concurrency_limit},
                       {"completed", x.completed},
                       {"failed", x.failed},
                       {"request_throughput", x.request_throughput},
                       {"output_throughput", x.output_throughput},
                       {"mean_ttft_ms", x.mean_ttft_ms}});
  }
  j["samples"] = samples;
  return j;
}

std::string format_sweep_table(const std::vector<std::pair<int32_t, ServeSummary>>& rows) {
  std::string out =
      "| concurrency | completed | failed | req/s | output tok/s | total tok/s | mean TTFT ms | "
      "p99 TTFT ms | mean TPOT ms | mean ITL ms | mean E2EL ms |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& [c, s] : rows) {
    auto p99 = [](const Distribution& d) {
      auto it = d.percentiles.find(99);
      return it == d.percentiles.end() ? std::string("-") : num(it->second);
    };
    out += "| " + std::to_string(c) + " | " + std::to_string(s.completed) + " | " +
           std::to_string(s.failed) + " | " + num(s.request_throughput) + " | " +
           num(s.output_throughput) + " | " + num(s.total_token_throughput) + " | " +
           num(s.ttft_ms.mean) + " | " + p99(s.ttft_ms) + " | " + num(s.tpot_ms.mean) + " | " +
           num(s.itl_ms.mean) + " | " + num(s.e2el_ms.mean) + " |\n";
  }
  return out;
}

std::string progress_line(const LoadSample& s) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "[%7.1fs] %lld done, %lld failed, %d in flight", s.t_s,
                static_cast<long long>(s.completed), static_cast<long long>(s.failed), s.in_flight);
  return buf;
}

Status write_result_json(const std::string& path, const Json& j) {
  std::ofstream out(path);
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
  out.close();
  if (!out) return io_error("--result-json " + path + ": cannot write");
  return Status::ok();
}

int exit_status(const Status& s) {
  if (s.is_ok()) return 0;
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return 1;
}

}  // namespace tierserve::bench

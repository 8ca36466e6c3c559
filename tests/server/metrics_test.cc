// /metrics exposition text: parsed back line by line (HELP/TYPE before samples, vLLM's names
// and labels, cumulative buckets with vLLM's boundaries, _sum/_count), counters that never go
// down, and concurrent updates.
#include "server/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace tierserve {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // metric family -> type
  std::map<std::string, std::string> helps;
  std::vector<Sample> samples;

  // The value of the sample with `name` and these labels (besides model_name and engine).
  double value(const std::string& name, std::map<std::string, std::string> extra = {}) const {
    for (const Sample& s : samples) {
      std::map<std::string, std::string> rest = s.labels;
      rest.erase("model_name");
      rest.erase("engine");
      if (s.name == name && rest == extra) return s.value;
    }
    ADD_FAILURE() << "no sample " << name;
    return -1;
  }
};

// The family a sample belongs to: the name itself, or without a histogram suffix.
std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      return name.substr(0, name.size() - s.size());
    }
  }
  return name;
}

// Parses the text format strictly: every line is a comment of the two kinds or a sample; a
// sample's family has its TYPE and HELP before it.
Exposition parse(const std::string& text) {
  Exposition e;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  std::istringstream in(text);
  std::string line;
  const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+))");
  const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+))");
  const std::regex label(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)\"(,|$))");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      e.helps[m[1]] = m[2];
    } else if (std::regex_match(line, m, type)) {
      EXPECT_TRUE(e.helps.count(m[1])) << "TYPE before HELP: " << line;
      e.types[m[1]] = m[2];
    } else if (std::regex_match(line, m, sample)) {
      Sample s;
      s.name = m[1];
      const std::string labels = m[2];
      std::string value = m[3];
      s.value = value == "+Inf" ? INFINITY : std::stod(value);
      for (auto it = std::sregex_iterator(labels.begin(), labels.end(), label);
           it != std::sregex_iterator(); ++it) {
        s.labels[(*it)[1]] = (*it)[2];
      }
      const std::string family = family_of(s.name, e.types);
      EXPECT_TRUE(e.types.count(family)) << "sample before its TYPE: " << line;
      e.samples.push_back(std::move(s));
    } else {
      ADD_FAILURE() << "unparseable line: '" << line << "'";
    }
  }
  return e;
}

TEST(MetricsTest, FormatsValuesAsThePythonClient) {
  EXPECT_EQ(format_metric_value(0), "0.0");
  EXPECT_EQ(format_metric_value(3), "3.0");
  EXPECT_EQ(format_metric_value(0.25), "0.25");
  EXPECT_EQ(format_metric_value(0.001), "0.001");
  EXPECT_EQ(format_metric_value(2560), "2560.0");
  EXPECT_EQ(format_metric_value(INFINITY), "+Inf");
  EXPECT_EQ(format_metric_value(NAN), "NaN");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndInclusive) {
  Histogram h({0.1, 0.5, 1.0});
  for (double v : {0.05, 0.1, 0.2, 0.5, 0.7, 3.0}) h.observe(v);
  EXPECT_EQ(h.cumulative_counts(), (std::vector<uint64_t>{2, 4, 5}));
  EXPECT_EQ(h.count(), 6u);
  EXPECT_DOUBLE_EQ(h.sum(), 4.55);
}

TEST(MetricsTest, VllmBucketBoundaries) {
  EXPECT_EQ(time_to_first_token_buckets().size(), 22u);
  EXPECT_EQ(time_to_first_token_buckets().front(), 0.001);
  EXPECT_EQ(time_to_first_token_buckets().back(), 2560.0);
  EXPECT_EQ(inter_token_latency_buckets().size(), 19u);
  EXPECT_EQ(inter_token_latency_buckets().front(), 0.01);
  EXPECT_EQ(inter_token_latency_buckets().back(), 80.0);
  EXPECT_EQ(request_latency_buckets().size(), 21u);
  EXPECT_EQ(request_latency_buckets().front(), 0.3);
  EXPECT_EQ(request_latency_buckets().back(), 7680.0);
}

TEST(MetricsTest, RendersEveryMetricWithTypesAndLabels) {
  Metrics metrics;
  EngineMetricsSnapshot s;
  s.num_requests_running = 3;
  s.num_requests_waiting = 2;
  s.kv_cache_usage = 0.25;
  s.num_preemptions_total = 4;
  s.prefix_cache_queries_total = 100;
  s.prefix_cache_hits_total = 60;
  s.kv_blocks_used = {10, 5, 1};
  s.kv_blocks_capacity = {64, 32, 128};
  s.tier_bytes_total[static_cast<int>(TierDirection::kHostToDevice)] = 4096;
  s.tier_bytes_total[static_cast<int>(TierDirection::kDiskToHost)] = 8192;
  s.weight_stream_stall_seconds_total = 1.5;
  metrics.record_engine(s);
  metrics.add_prompt_tokens(12);
  metrics.add_prompt_tokens(8);
  metrics.add_generation_tokens(30);
  metrics.inc_request_success("stop");
  metrics.inc_request_success("stop");
  metrics.inc_request_success("length");
  metrics.observe_time_to_first_token(0.03);
  metrics.observe_time_to_first_token(5000);
  metrics.observe_inter_token_latency(0.02);
  metrics.observe_e2e_request_latency(1.2);
  metrics.observe_request_queue_time(0.1);

  Exposition e = parse(metrics.render("my \"model\""));
  const std::map<std::string, std::string> expected_types = {
      {"vllm:num_requests_running", "gauge"},
      {"vllm:num_requests_waiting", "gauge"},
      {"vllm:kv_cache_usage_perc", "gauge"},
      {"vllm:prompt_tokens_total", "counter"},
      {"vllm:generation_tokens_total", "counter"},
      {"vllm:request_success_total", "counter"},
      {"vllm:num_preemptions_total", "counter"},
      {"vllm:prefix_cache_queries_total", "counter"},
      {"vllm:prefix_cache_hits_total", "counter"},
      {"vllm:time_to_first_token_seconds", "histogram"},
      {"vllm:inter_token_latency_seconds", "histogram"},
      {"vllm:e2e_request_latency_seconds", "histogram"},
      {"vllm:request_queue_time_seconds", "histogram"},
      {"tierserve:tier_bytes_total", "counter"},
      {"tierserve:weight_stream_stall_seconds_total", "counter"},
      {"tierserve:kv_blocks", "gauge"},
      {"tierserve:kv_blocks_capacity", "gauge"},
  };
  EXPECT_EQ(e.types, expected_types);
  for (const Sample& sample : e.samples) {
    EXPECT_EQ(sample.labels.at("model_name"), "my \\\"model\\\"") << sample.name;  // escaped
    EXPECT_EQ(sample.labels.at("engine"), "0");
  }

  EXPECT_EQ(e.value("vllm:num_requests_running"), 3);
  EXPECT_EQ(e.value("vllm:num_requests_waiting"), 2);
  EXPECT_EQ(e.value("vllm:kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(e.value("vllm:prompt_tokens_total"), 20);
  EXPECT_EQ(e.value("vllm:generation_tokens_total"), 30);
  EXPECT_EQ(e.value("vllm:num_preemptions_total"), 4);
  EXPECT_EQ(e.value("vllm:prefix_cache_queries_total"), 100);
  EXPECT_EQ(e.value("vllm:prefix_cache_hits_total"), 60);
  EXPECT_EQ(e.value("vllm:request_success_total", {{"finished_reason", "stop"}}), 2);
  EXPECT_EQ(e.value("vllm:request_success_total", {{"finished_reason", "length"}}), 1);
  EXPECT_EQ(e.value("vllm:request_success_total", {{"finished_reason", "abort"}}), 0);
  EXPECT_EQ(e.value("vllm:request_success_total", {{"finished_reason", "error"}}), 0);
  EXPECT_EQ(e.value("tierserve:tier_bytes_total", {{"direction", "host_to_device"}}), 4096);
  EXPECT_EQ(e.value("tierserve:tier_bytes_total", {{"direction", "disk_to_host"}}), 8192);
  EXPECT_EQ(e.value("tierserve:tier_bytes_total", {{"direction", "device_to_host"}}), 0);
  EXPECT_EQ(e.value("tierserve:weight_stream_stall_seconds_total"), 1.5);
  EXPECT_EQ(e.value("tierserve:kv_blocks", {{"tier", "device"}}), 10);
  EXPECT_EQ(e.value("tierserve:kv_blocks", {{"tier", "host"}}), 5);
  EXPECT_EQ(e.value("tierserve:kv_blocks", {{"tier", "disk"}}), 1);
  EXPECT_EQ(e.value("tierserve:kv_blocks_capacity", {{"tier", "disk"}}), 128);

  // TTFT: 0.03 falls in le=0.04 and above; 5000 only in +Inf.
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_bucket", {{"le", "0.02"}}), 0);
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_bucket", {{"le", "0.04"}}), 1);
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_bucket", {{"le", "2560.0"}}), 1);
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_bucket", {{"le", "+Inf"}}), 2);
  EXPECT_DOUBLE_EQ(e.value("vllm:time_to_first_token_seconds_sum"), 5000.03);
  EXPECT_EQ(e.value("vllm:time_to_first_token_seconds_count"), 2);
  EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_bucket", {{"le", "1.0"}}), 0);
  EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_bucket", {{"le", "1.5"}}), 1);
  EXPECT_EQ(e.value("vllm:request_queue_time_seconds_bucket", {{"le", "0.3"}}), 1);
  EXPECT_EQ(e.value("vllm:inter_token_latency_seconds_bucket", {{"le", "0.025"}}), 1);
}

TEST(MetricsTest, HistogramSeriesAreCompleteAndMonotonic) {
  Metrics metrics;
  for (int i = 0; i < 50; ++i) metrics.observe_inter_token_latency(i * 0.05);
  Exposition e = parse(metrics.render("m"));
  std::vector<double> les, counts;
  for (const Sample& s : e.samples) {
    if (s.name != "vllm:inter_token_latency_seconds_bucket") continue;
    les.push_back(s.labels.at("le") == "+Inf" ? INFINITY : std::stod(s.labels.at("le")));
    counts.push_back(s.value);
  }
  ASSERT_EQ(les.size(), inter_token_latency_buckets().size() + 1);
  for (size_t i = 0; i + 1 < les.size(); ++i) {
    EXPECT_EQ(les[i], inter_token_latency_buckets()[i]);
    EXPECT_LT(les[i], les[i + 1]);
    EXPECT_LE(counts[i], counts[i + 1]);
  }
  EXPECT_EQ(counts.back(), 50);
  EXPECT_EQ(e.value("vllm:inter_token_latency_seconds_count"), 50);
}

TEST(MetricsTest, EngineCountersNeverGoDown) {
  Metrics metrics;
  EngineMetricsSnapshot s;
  s.num_preemptions_total = 5;
  s.num_requests_running = 4;
  metrics.record_engine(s);
  s.num_preemptions_total = 2;  // an older snapshot arriving late
  s.num_requests_running = 1;   // gauges follow the latest snapshot
  metrics.record_engine(s);
  Exposition e = parse(metrics.render("m"));
  EXPECT_EQ(e.value("vllm:num_preemptions_total"), 5);
  EXPECT_EQ(e.value("vllm:num_requests_running"), 1);
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  Metrics metrics;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        metrics.add_generation_tokens(1);
        metrics.observe_e2e_request_latency(0.4);
        metrics.inc_request_success("abort");
        if (i % 100 == 0) (void)metrics.render("m");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  Exposition e = parse(metrics.render("m"));
  EXPECT_EQ(e.value("vllm:generation_tokens_total"), 4000);
  EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_count"), 4000);
  EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_bucket", {{"le", "0.5"}}), 4000);
  EXPECT_EQ(e.value("vllm:e2e_request_latency_seconds_bucket", {{"le", "0.3"}}), 0);
  EXPECT_EQ(e.value("vllm:request_success_total", {{"finished_reason", "abort"}}), 4000);
}

}  // namespace
}  // namespace tierserve

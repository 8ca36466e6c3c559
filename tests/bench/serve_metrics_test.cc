// The benchmark's arithmetic against values computed by hand (and numpy's conventions).
#include "bench/serve_metrics.h"

#include <gtest/gtest.h>

#include "bench/bench_command.h"
#include "bench/http_stream.h"

namespace tierserve::bench {
namespace {

TEST(PercentileTest, LinearInterpolationLikeNumpy) {
  // numpy.percentile([4, 1, 3, 2], p): rank = p / 100 * 3.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
}

TEST(DistributionTest, MeanMedianPopulationStdInMilliseconds) {
  const Distribution d = distribution_ms({0.001, 0.002, 0.003, 0.006}, {50, 99});
  EXPECT_EQ(d.count, 4);
  EXPECT_DOUBLE_EQ(d.mean, 3);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  // Deviations -2, -1, 0, 3: variance 14 / 4.
  EXPECT_NEAR(d.std, std::sqrt(3.5), 1e-12);
  EXPECT_NEAR(d.percentiles.at(99), 3 + 3 * 0.97, 1e-12);
}

RequestRecord ok(double start, double ttft, double latency, std::vector<double> itl, int64_t in,
                 int64_t out) {
  RequestRecord r;
  r.success = true;
  r.start_s = start;
  r.ttft_s = ttft;
  r.latency_s = latency;
  r.itl_s = std::move(itl);
  r.prompt_tokens = in;
  r.output_tokens = out;
  return r;
}

TEST(SummarizeTest, ThroughputsAndDistributionsByHand) {
  std::vector<RequestRecord> rs;
  // A: TTFT 100 ms, 5 tokens over 500 ms: TPOT (0.5 - 0.1) / 4 = 100 ms.
  rs.push_back(ok(0, 0.1, 0.5, {0.1, 0.1, 0.1, 0.1}, 10, 5));
  // B: TTFT 300 ms, 3 tokens over 700 ms: TPOT 200 ms.
  rs.push_back(ok(0.2, 0.3, 0.7, {0.15, 0.25}, 20, 3));
  // C: one token only: no TPOT, no ITL.
  rs.push_back(ok(0.4, 0.2, 0.2, {}, 30, 1));
  RequestRecord failed;
  failed.error_class = "http_503";
  failed.prompt_tokens = 99;
  rs.push_back(failed);
  RequestRecord timeout;
  timeout.error_class = "timeout";
  rs.push_back(timeout);
  const ServeSummary s = summarize(rs, 2.0, {50, 99});
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.errors.at("http_503"), 1);
  EXPECT_EQ(s.errors.at("timeout"), 1);
  EXPECT_EQ(s.total_input_tokens, 60);  // failed requests' prompts do not count
  EXPECT_EQ(s.total_output_tokens, 9);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 4.5);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 34.5);
  EXPECT_NEAR(s.ttft_ms.mean, 200, 1e-9);
  EXPECT_NEAR(s.ttft_ms.median, 200, 1e-9);
  EXPECT_EQ(s.tpot_ms.count, 2);
  EXPECT_NEAR(s.tpot_ms.mean, 150, 1e-9);
  EXPECT_NEAR(s.tpot_ms.percentiles.at(99), 199, 1e-9);
  EXPECT_EQ(s.itl_ms.count, 6);
  EXPECT_NEAR(s.itl_ms.mean, 800.0 / 6, 1e-9);
  EXPECT_NEAR(s.itl_ms.median, 100, 1e-9);
  EXPECT_NEAR(s.e2el_ms.mean, 1400.0 / 3, 1e-9);
}

TEST(SummarizeTest, NothingCompleted) {
  RequestRecord failed;
  failed.error_class = "connect";
  const ServeSummary s = summarize({failed}, 1.0, {99});
  EXPECT_EQ(s.completed, 0);
  EXPECT_EQ(s.ttft_ms.count, 0);
  EXPECT_EQ(s.ttft_ms.percentiles.at(99), 0);
  EXPECT_EQ(s.request_throughput, 0);
}

TEST(ParseTest, BaseUrlsAndDurations) {
  auto u = parse_base_url("http://10.0.0.2:8080/api/");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->host, "10.0.0.2");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->prefix, "/api");
  u = parse_base_url("http://localhost");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->prefix, "");
  EXPECT_NE(parse_base_url("https://x").status().message().find("https"), std::string::npos);
  EXPECT_FALSE(parse_base_url("localhost:8000").is_ok());
  EXPECT_FALSE(parse_base_url("http://h:99999").is_ok());
  EXPECT_FALSE(parse_base_url("http://:80").is_ok());
  EXPECT_DOUBLE_EQ(parse_seconds("300s", "--duration").value(), 300);
  EXPECT_DOUBLE_EQ(parse_seconds("5m", "--duration").value(), 300);
  EXPECT_DOUBLE_EQ(parse_seconds("250ms", "--duration").value(), 0.25);
  EXPECT_DOUBLE_EQ(parse_seconds("2", "--duration").value(), 2);
  EXPECT_NE(parse_seconds("5 minutes", "--duration").status().message().find("--duration"),
            std::string::npos);
  EXPECT_FALSE(parse_seconds("-1s", "--ramp-up").is_ok());
}

}  // namespace
}  // namespace tierserve::bench

// Continuous batching end to end (DESIGN.md §6, invariants 1, 3, 4, 6): in --deterministic mode
// every request's greedy output is exactly what it produces alone, whatever it is batched with,
// however its prompt is chunked, whether it was preempted, and whether its prefix came from the
// prefix cache; every block is free once all requests end.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "engine/llm_engine.h"
#include "tests/engine/batching_util.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using namespace testing;  // NOLINT: the shared helpers

class BatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchingTest, ConcurrentRequestsMatchEachAlone) {
  const std::string model = GetParam();
  auto probe = open(model, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const std::vector<Case> cases = make_cases(probe->config().vocab_size, 7);
  const auto alone = run_alone(model, cases);
  ASSERT_EQ(alone.size(), cases.size());

  // Small steps: prompts are chunked and mixed with decodes of other requests.
  for (bool prefix_caching : {true, false}) {
    EngineOptions o = deterministic_options();
    o.enable_prefix_caching = prefix_caching;
    o.max_num_batched_tokens = 48;
    o.max_num_seqs = 24;
    auto engine = open(model, o);
    ASSERT_NE(engine, nullptr);
    const auto together = run_together(*engine, cases);
    for (size_t i = 0; i < cases.size(); ++i) {
      EXPECT_EQ(together[i], alone[i]) << "request " << i << ", prefix caching " << prefix_caching;
    }
    EXPECT_GT(engine->stats().scheduled_seqs, 2 * engine->stats().steps) << "batches were formed";
    EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0) << "blocks leaked";
    if (prefix_caching) {
      EXPECT_GT(engine->kv_cache().prefix_hit_tokens(), 0);
    } else {
      EXPECT_EQ(engine->kv_cache().prefix_hit_tokens(), 0);
    }
  }
}

TEST_P(BatchingTest, PreemptionByRecomputeKeepsOutputsExact) {
  const std::string model = GetParam();
  auto probe = open(model, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const uint64_t block_bytes = probe->kv_sizing().bytes / probe->kv_sizing().num_blocks;
  const std::vector<Case> cases = make_cases(probe->config().vocab_size, 11);
  const auto alone = run_alone(model, cases);
  for (bool prefix_caching : {true, false}) {
    EngineOptions o = deterministic_options();
    o.enable_prefix_caching = prefix_caching;
    o.max_num_batched_tokens = 64;
    o.max_model_len = 192;                       // the longest case: 160 prompt + 32 output
    o.kv_cache_memory_bytes = 12 * block_bytes;  // 192 tokens: the longest request, barely
    auto engine = open(model, o);
    ASSERT_NE(engine, nullptr);
    ASSERT_EQ(engine->kv_sizing().num_blocks, 12);
    const auto together = run_together(*engine, cases);
    for (size_t i = 0; i < cases.size(); ++i) {
      EXPECT_EQ(together[i], alone[i]) << "request " << i << ", prefix caching " << prefix_caching;
    }
    EXPECT_GT(engine->stats().preemptions, 10);
    EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0) << "blocks leaked";
  }
}

TEST_P(BatchingTest, AbortFreesEverythingAndSparesTheOthers) {
  const std::string model = GetParam();
  auto probe = open(model, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const std::vector<Case> cases = make_cases(probe->config().vocab_size, 13);
  const auto alone = run_alone(model, cases);
  EngineOptions o = deterministic_options();
  o.max_num_batched_tokens = 64;
  auto engine = open(model, o);
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) streams.push_back(engine->add_request(c.prompt, greedy(32)).value());
  // Abort the odd requests at different points: queued, mid-prefill, mid-decode.
  for (int step = 0; engine->step(); ++step) {
    if (step % 3 == 0 && step / 3 * 2 + 1 < static_cast<int>(cases.size())) {
      engine->abort(streams[static_cast<size_t>(step / 3 * 2 + 1)]->request_id());
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int32_t> tokens;
    std::string reason;
    while (auto out = streams[i]->poll()) {
      tokens.insert(tokens.end(), out->token_ids.begin(), out->token_ids.end());
      if (out->finished) reason = out->finish_reason;
    }
    ASSERT_TRUE(streams[i]->done()) << i;
    if (reason == "abort") {
      EXPECT_EQ(i % 2, 1u);
      EXPECT_LT(tokens.size(), 32u);
    } else {
      EXPECT_EQ(reason, "length");
      // max_tokens 32 here: the request's alone output is a prefix of this one.
      ASSERT_GE(tokens.size(), alone[i].size());
      EXPECT_EQ(std::vector<int32_t>(tokens.begin(), tokens.begin() + alone[i].size()), alone[i]);
    }
  }
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0) << "blocks leaked";
  engine->abort(12345);  // unknown ids are ignored
  EXPECT_FALSE(engine->step());
}

TEST_P(BatchingTest, ParallelSamplingSharesThePromptCopyOnWrite) {
  const std::string model = GetParam();
  EngineOptions o = deterministic_options();
  auto engine = open(model, o);
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 37; ++i) prompt.push_back((i * 7 + 3) % engine->config().vocab_size);
  SamplingParams p = greedy(10);
  auto single = engine->generate(prompt, p);
  ASSERT_TRUE(single.is_ok());
  p.n = 3;
  auto stream = engine->add_request(prompt, p).value();
  int32_t peak_used = 0;
  while (engine->step()) peak_used = std::max(peak_used, engine->kv_cache().num_used_blocks());
  std::map<int32_t, std::vector<int32_t>> outputs;
  while (auto out = stream->poll()) {
    auto& v = outputs[out->index];
    v.insert(v.end(), out->token_ids.begin(), out->token_ids.end());
  }
  ASSERT_EQ(outputs.size(), 3u);
  for (auto& [index, tokens] : outputs) EXPECT_EQ(tokens, single.value().token_ids) << index;
  // 47 tokens need 3 blocks each; sharing the two full prompt blocks, three outputs need 2 + 3.
  EXPECT_EQ(peak_used, 5);
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST_P(BatchingTest, RequestsFromManyThreads) {
  const std::string model = GetParam();
  auto probe = open(model, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const std::vector<Case> cases = make_cases(probe->config().vocab_size, 17);
  const auto alone = run_alone(model, cases);
  EngineOptions o = deterministic_options();
  o.max_num_batched_tokens = 64;
  auto engine = open(model, o);
  ASSERT_NE(engine, nullptr);
  engine->start();
  std::vector<std::vector<int32_t>> got(cases.size());
  std::vector<std::thread> clients;
  for (size_t t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (size_t i = t; i < cases.size(); i += 8) {
        auto stream = engine->add_request(cases[i].prompt, greedy(cases[i].max_tokens));
        if (!stream.is_ok()) continue;
        while (auto out = stream.value()->next()) {
          got[i].insert(got[i].end(), out->token_ids.begin(), out->token_ids.end());
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  engine->stop();
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(got[i], alone[i]) << "request " << i;
  EXPECT_EQ(engine->kv_cache().num_used_blocks(), 0);
}

TEST(BatchingAdmissionTest, RequestsThatCanNeverFitAreRejected) {
  auto probe = open("llama_gqa_f32", deterministic_options());
  ASSERT_NE(probe, nullptr);
  const uint64_t block_bytes = probe->kv_sizing().bytes / probe->kv_sizing().num_blocks;
  EngineOptions o = deterministic_options();
  o.kv_cache_memory_bytes = 4 * block_bytes;  // 64 tokens
  o.max_model_len = 64;
  auto engine = open("llama_gqa_f32", o);
  ASSERT_NE(engine, nullptr);
  auto too_long = engine->add_request(std::vector<int32_t>(60, 1), greedy(10));
  ASSERT_FALSE(too_long.is_ok());
  EXPECT_NE(too_long.status().message().find("maximum context length is 64"), std::string::npos);

  // A cache smaller than one request of --max-model-len fails at start-up, naming what fits.
  o.max_model_len = 128;
  auto small = LlmEngine::create(model_path("llama_gqa_f32"), o);
  ASSERT_FALSE(small.is_ok());
  EXPECT_NE(small.status().message().find("use --max-model-len 64 or less"), std::string::npos)
      << small.status().message();
}

INSTANTIATE_TEST_SUITE_P(Models, BatchingTest, ::testing::Values("llama_gqa_bf16", "demo"));

}  // namespace
}  // namespace tierserve

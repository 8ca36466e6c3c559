// Helpers shared by the end-to-end batching tests: fixture paths, --deterministic options,
// request mixes, and running requests alone or all at once.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/llm_engine.h"

namespace tierserve::testing {

struct Case {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
};

inline std::filesystem::path model_path(const std::string& name) {
  if (name == "demo") return std::filesystem::path(TIERSERVE_SOURCE_DIR) / "models" / "demo";
  return std::filesystem::path(TIERSERVE_FIXTURES_DIR) / name;
}

inline EngineOptions deterministic_options() {
  EngineOptions o;
  o.backend.deterministic = true;
  o.backend.num_threads = 2;
  o.max_model_len = 256;
  o.kv_cache_memory_bytes = 64ull << 20;
  return o;
}

inline std::unique_ptr<LlmEngine> open(const std::string& model, const EngineOptions& o) {
  auto engine = LlmEngine::create(model_path(model), o);
  EXPECT_TRUE(engine.is_ok()) << engine.status().to_string();
  return engine.is_ok() ? std::move(engine).value() : nullptr;
}

inline SamplingParams greedy(int32_t max_tokens) {
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = max_tokens;
  return p;
}

// `count` requests with mixed prompt lengths and max_tokens; every fourth shares a 40-token prefix
// with the others of its kind, so the prefix cache has something to find.
inline std::vector<Case> make_cases(int32_t vocab, uint32_t seed, size_t count = 64) {
  std::mt19937 rng(seed);
  auto token = [&] { return static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)); };
  std::vector<int32_t> shared(40);
  for (int32_t& t : shared) t = token();
  std::vector<Case> cases(count);
  for (size_t i = 0; i < cases.size(); ++i) {
    Case& c = cases[i];
    if (i % 4 == 0) c.prompt = shared;
    const int32_t len = 1 + static_cast<int32_t>(rng() % 120);
    for (int32_t j = 0; j < len; ++j) c.prompt.push_back(token());
    c.max_tokens = 1 + static_cast<int32_t>(rng() % 32);
  }
  return cases;
}

// What each request generates alone: one at a time, no prefix cache, one chunk per prompt.
inline std::vector<std::vector<int32_t>> run_alone(const std::string& model,
                                                   const std::vector<Case>& cases) {
  EngineOptions o = deterministic_options();
  o.enable_prefix_caching = false;
  auto engine = open(model, o);
  std::vector<std::vector<int32_t>> out;
  if (engine == nullptr) return out;
  for (const Case& c : cases) {
    auto r = engine->generate(c.prompt, greedy(c.max_tokens));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    out.push_back(r.is_ok() ? r.value().token_ids : std::vector<int32_t>{});
  }
  return out;
}

// All requests added at once and stepped to completion on this thread.
inline std::vector<std::vector<int32_t>> run_together(LlmEngine& engine,
                                                      const std::vector<Case>& cases) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) {
    auto s = engine.add_request(c.prompt, greedy(c.max_tokens));
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    if (!s.is_ok()) return {};
    streams.push_back(s.value());
  }
  while (engine.step()) {
  }
  std::vector<std::vector<int32_t>> out(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    int queue_times = 0;  // a request's queue time arrives once, with one of its outputs
    while (auto o = streams[i]->poll()) {
      out[i].insert(out[i].end(), o->token_ids.begin(), o->token_ids.end());
      if (o->queue_seconds >= 0) ++queue_times;
      if (o->finished) {
        EXPECT_EQ(o->finish_reason, "length");
      }
    }
    EXPECT_TRUE(streams[i]->done());
    EXPECT_EQ(queue_times, 1) << "request " << i;
  }
  return out;
}

}  // namespace tierserve::testing

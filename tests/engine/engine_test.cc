// LlmEngine's input checks, stopping rules and dummy loading, on the fixture models.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "engine/llm_engine.h"
#include "tests/engine/golden_util.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

// A private copy of a fixture model directory (or of its config.json alone), removed at scope
// exit even when an assertion fails.
class FixtureCopy {
 public:
  FixtureCopy(const std::string& model, const std::string& tag, bool config_only = false)
      : dir_(fs::temp_directory_path() / ("tierserve_" + tag + "_" + std::to_string(::getpid()))) {
    const fs::path src = fs::path(TIERSERVE_FIXTURES_DIR) / model;
    fs::remove_all(dir_);
    if (config_only) {
      fs::create_directories(dir_);
      fs::copy_file(src / "config.json", dir_ / "config.json");
    } else {
      fs::copy(src, dir_, fs::copy_options::recursive);
    }
  }
  ~FixtureCopy() { fs::remove_all(dir_); }
  const fs::path& path() const { return dir_; }

 private:
  fs::path dir_;
};

std::unique_ptr<LlmEngine> open_engine(const std::string& model, LoadFormat format,
                                       int32_t max_model_len = 128) {
  EngineOptions options;
  options.max_model_len = max_model_len;
  options.load_format = format;
  auto engine = LlmEngine::create(fs::path(TIERSERVE_FIXTURES_DIR) / model, options);
  EXPECT_TRUE(engine.is_ok()) << engine.status().to_string();
  return engine.is_ok() ? std::move(engine).value() : nullptr;
}

TEST(EngineTest, RejectsBadPrompts) {
  auto engine = open_engine("llama_gqa_f32", LoadFormat::kAuto, 64);
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  auto empty = engine->generate({}, p);
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  auto out_of_vocab = engine->generate({1, engine->config().vocab_size}, p);
  EXPECT_NE(out_of_vocab.status().message().find("outside the vocabulary"), std::string::npos);
  p.max_tokens = 60;
  auto too_long = engine->generate(std::vector<int32_t>(10, 1), p);
  EXPECT_NE(too_long.status().message().find("maximum context length is 64"), std::string::npos);
  auto bad_continuation = engine->score({1, 2}, {3, engine->config().vocab_size});
  EXPECT_NE(bad_continuation.status().message().find("continuation: prompt token 1"),
            std::string::npos)
      << bad_continuation.status().message();
  // The engine is still usable after rejected requests.
  p.max_tokens = 4;
  auto ok = engine->generate({1, 2, 3}, p);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok.value().token_ids.size(), 4u);
}

TEST(EngineTest, MasksAPaddedVocabulary) {
  // chatglm3_f32's output layer has 320 rows (padded_vocab_size); a tokenizer of 50 ids leaves
  // 270 rows of padding, among them the reference's own greedy choices, which must never be
  // produced: the first token is the reference's arg-max over the first 50 logits.
  constexpr int32_t kIds = 50;
  const testing::Golden g =
      testing::read_golden(fs::path(TIERSERVE_GOLDEN_DIR) / "chatglm3_f32.json");
  ASSERT_GE(g.tokens[0], kIds);
  const std::vector<float>& first = g.logits[0];
  const int32_t expected =
      static_cast<int32_t>(std::max_element(first.begin(), first.begin() + kIds) - first.begin());
  EngineOptions options;
  options.max_model_len = 128;
  options.tokenizer_vocab_size = kIds;
  auto engine = LlmEngine::create(fs::path(TIERSERVE_FIXTURES_DIR) / "chatglm3_f32", options);
  ASSERT_TRUE(engine.is_ok()) << engine.status().to_string();
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = 12;
  for (bool logprobs : {false, true}) {  // the backend's arg-max, then the host sampler
    SCOPED_TRACE(logprobs ? "host sampler" : "backend arg-max");
    p.logprobs = logprobs ? std::optional<int32_t>(0) : std::nullopt;
    auto greedy = engine.value()->generate(g.prompt, p);
    ASSERT_TRUE(greedy.is_ok()) << greedy.status().to_string();
    EXPECT_EQ(greedy.value().token_ids[0], expected);
    for (int32_t t : greedy.value().token_ids) EXPECT_LT(t, kIds);
  }
  p.temperature = 20.0;  // nearly uniform: padding would be drawn often if it were not masked
  p.seed = 7;
  p.max_tokens = 64;
  p.logprobs = std::nullopt;
  auto sampled = engine.value()->generate(g.prompt, p);
  ASSERT_TRUE(sampled.is_ok()) << sampled.status().to_string();
  for (int32_t t : sampled.value().token_ids) EXPECT_LT(t, kIds);
}

TEST(EngineTest, StopsAtStopTokensAndEos) {
  auto engine = open_engine("llama_gqa_f32", LoadFormat::kAuto);
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = 8;
  p.logprobs = 0;
  auto free_run = engine->generate({1, 5, 9, 13}, p);
  ASSERT_TRUE(free_run.is_ok());
  const auto& tokens = free_run.value().token_ids;
  ASSERT_EQ(tokens.size(), 8u);
  EXPECT_EQ(free_run.value().finish_reason, "length");
  EXPECT_EQ(free_run.value().logprobs.size(), 8u);
  for (float lp : free_run.value().logprobs) EXPECT_LE(lp, 0.0f);

  // A stop token ends generation at its first occurrence, and is kept.
  p.stop_token_ids = {tokens[2]};
  auto stopped = engine->generate({1, 5, 9, 13}, p);
  ASSERT_TRUE(stopped.is_ok());
  size_t first =
      static_cast<size_t>(std::find(tokens.begin(), tokens.end(), tokens[2]) - tokens.begin());
  EXPECT_EQ(stopped.value().token_ids.size(), first + 1);
  EXPECT_EQ(stopped.value().finish_reason, "stop");

  // min_tokens suppresses the stop token until enough tokens exist.
  p.min_tokens = static_cast<int32_t>(first) + 2;
  auto delayed = engine->generate({1, 5, 9, 13}, p);
  ASSERT_TRUE(delayed.is_ok());
  EXPECT_GE(delayed.value().token_ids.size(), first + 2);
}

TEST(EngineTest, TokenCallbackSeesEveryTokenAndCanStop) {
  auto engine = open_engine("llama_gqa_f32", LoadFormat::kAuto);
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = 8;
  std::vector<int32_t> seen;
  auto out = engine->generate({1, 5, 9}, p, [&](int32_t token) {
    seen.push_back(token);
    return seen.size() < 3;  // a stop string matched on the third token
  });
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(out.value().token_ids, seen);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(out.value().finish_reason, "stop");
}

TEST(EngineTest, SeededSamplingIsReproducible) {
  auto engine = open_engine("qwen2_f32", LoadFormat::kAuto);
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  p.temperature = 1.0;
  p.top_k = 20;
  p.seed = 42;
  p.max_tokens = 12;
  p.ignore_eos = true;
  auto a = engine->generate({1, 2, 3}, p);
  auto b = engine->generate({1, 2, 3}, p);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a.value().token_ids, b.value().token_ids);
}

TEST(EngineTest, DummyWeightsNeedOnlyTheConfig) {
  // A directory holding config.json alone loads with --load-format dummy.
  FixtureCopy copy("qwen3_bf16", "dummy", /*config_only=*/true);
  const fs::path& dir = copy.path();
  EngineOptions options;
  options.max_model_len = 64;
  options.load_format = LoadFormat::kDummy;
  auto engine = LlmEngine::create(dir, options);
  ASSERT_TRUE(engine.is_ok()) << engine.status().to_string();
  SamplingParams p;
  p.max_tokens = 5;
  p.ignore_eos = true;
  auto out = engine.value()->generate({1, 2, 3}, p);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out.value().token_ids.size(), 5u);
  // Without dummy, the missing weights are named.
  options.load_format = LoadFormat::kAuto;
  auto missing = LlmEngine::create(dir, options);
  EXPECT_FALSE(missing.is_ok());
}

TEST(EngineTest, ShapeDisagreeingWithConfigIsNamed) {
  FixtureCopy copy("llama_gqa_f32", "shape");
  const fs::path& dir = copy.path();
  std::ifstream in(dir / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const std::string key = "\"intermediate_size\": ";
  size_t pos = text.find(key);
  ASSERT_NE(pos, std::string::npos) << text;
  size_t end = text.find_first_of(",}", pos);
  text.replace(pos, end - pos, key + "96");
  std::ofstream(dir / "config.json") << text;
  EngineOptions options;
  options.max_model_len = 64;
  auto engine = LlmEngine::create(dir, options);
  ASSERT_FALSE(engine.is_ok());
  const std::string& msg = engine.status().message();
  EXPECT_NE(msg.find("model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight'"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("expected [96, "), std::string::npos) << msg;
}

TEST(EngineTest, StopsAtTheModelsEosUnlessIgnored) {
  // Make the third greedy token the model's EOS through generation_config.json.
  auto engine = open_engine("qwen2_f32", LoadFormat::kAuto);
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = 6;
  auto free_run = engine->generate({4, 8, 15, 16}, p);
  ASSERT_TRUE(free_run.is_ok());
  const int32_t eos = free_run.value().token_ids[2];
  const auto& t = free_run.value().token_ids;
  const size_t first = static_cast<size_t>(std::find(t.begin(), t.end(), eos) - t.begin());

  FixtureCopy copy("qwen2_f32", "eos");
  const fs::path& dir = copy.path();
  std::ofstream(dir / "generation_config.json")
      << "{\"bos_token_id\": 1, \"eos_token_id\": [3, " << eos << "]}";
  EngineOptions options;
  options.max_model_len = 64;
  auto eos_engine = LlmEngine::create(dir, options);
  ASSERT_TRUE(eos_engine.is_ok()) << eos_engine.status().to_string();
  p.ignore_eos = false;
  auto stopped = eos_engine.value()->generate({4, 8, 15, 16}, p);
  ASSERT_TRUE(stopped.is_ok());
  EXPECT_EQ(stopped.value().token_ids.size(), first + 1);
  EXPECT_EQ(stopped.value().token_ids.back(), eos);
  EXPECT_EQ(stopped.value().finish_reason, "stop");
  p.ignore_eos = true;
  auto ignored = eos_engine.value()->generate({4, 8, 15, 16}, p);
  ASSERT_TRUE(ignored.is_ok());
  EXPECT_EQ(ignored.value().token_ids, t);
  EXPECT_EQ(ignored.value().finish_reason, "length");
}

}  // namespace
}  // namespace tierserve

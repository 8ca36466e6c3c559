// The engine against the golden outputs of tests/fixtures/reference.py, an independent PyTorch
// implementation of Hugging Face transformers' forward semantics, on the fixture models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/llm_engine.h"
#include "tests/engine/golden_util.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

using testing::Golden;
using testing::golden_names;
using testing::is_bf16;
using testing::is_f16;
using testing::max_abs;
using testing::read_golden;

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Relative tolerances on logits (max |ours - reference| / max |reference|). f32 follows the
// issue's bound; bf16 models differ from Hugging Face's bf16 arithmetic because this engine keeps
// activations in f32 (Hugging Face rounds every activation to bf16). f16 models are referenced in
// f32 over their f16 weights (PyTorch has no f16 matmul on the CPU) while this engine stores K and
// V in f16, as Hugging Face does: one f16 rounding (2^-11) of K and V.
double logit_tolerance(const Golden& g) {
  if (is_bf16(g)) return 4e-2;
  if (is_f16(g)) return 2e-3;
  return 1e-4;
}
// A top-1 margin is "clear" when the tolerance could not flip it: each of the two logits may move
// by tolerance x max |logit|.
bool clear_margin(const Golden& g, size_t step) {
  return g.margins[step] > 2 * logit_tolerance(g) * max_abs(g.logits[step]);
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = read_golden(fs::path(TIERSERVE_GOLDEN_DIR) / (GetParam() + ".json"));
    ASSERT_EQ(golden_.logits.size(), golden_.tokens.size());
    ASSERT_EQ(golden_.margins.size(), golden_.tokens.size());
  }

  std::unique_ptr<LlmEngine> make_engine(int32_t block_size = 16) {
    EngineOptions options;
    options.block_size = block_size;
    options.max_model_len = 256;
    auto engine = LlmEngine::create(fs::path(TIERSERVE_FIXTURES_DIR) / golden_.model, options);
    EXPECT_TRUE(engine.is_ok()) << engine.status().to_string();
    return engine.is_ok() ? std::move(engine).value() : nullptr;
  }

  // Teacher-forced logits of the golden continuation.
  std::vector<std::vector<float>> score(LlmEngine& engine, int32_t chunk) {
    std::vector<int32_t> forced(golden_.tokens.begin(), golden_.tokens.end() - 1);
    auto logits = engine.score(golden_.prompt, forced, chunk);
    EXPECT_TRUE(logits.is_ok()) << logits.status().to_string();
    return logits.is_ok() ? logits.value() : std::vector<std::vector<float>>{};
  }

  Golden golden_;
};

TEST_P(GoldenTest, LogitsMatchReference) {
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  auto ours = score(*engine, 0);
  ASSERT_EQ(ours.size(), golden_.logits.size());
  int clear_steps = 0;
  double worst = 0;
  for (size_t s = 0; s < ours.size(); ++s) {
    const std::vector<float>& ref = golden_.logits[s];
    ASSERT_EQ(ours[s].size(), ref.size());
    double err = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(ours[s][i] - ref[i])));
    }
    double rel = err / max_abs(ref);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, logit_tolerance(golden_)) << "step " << s;
    if (clear_margin(golden_, s)) {
      ++clear_steps;
      EXPECT_EQ(argmax(ours[s]), golden_.tokens[s]) << "step " << s;
    }
  }
  std::printf("%s: worst relative logit error %.2e (tolerance %.0e), %d of %zu steps decisive\n",
              GetParam().c_str(), worst, logit_tolerance(golden_), clear_steps, ours.size());
  // The fixtures are built with well-separated logits, so that the token check is not vacuous.
  EXPECT_GE(clear_steps, static_cast<int>(ours.size()) / 4);
}

TEST_P(GoldenTest, GreedyGenerationMatchesReference) {
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = static_cast<int32_t>(golden_.tokens.size());
  auto out = engine->generate(golden_.prompt, p);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  // Tokens agree up to the first step whose reference margin is too small to be decisive.
  for (size_t s = 0; s < golden_.tokens.size() && clear_margin(golden_, s); ++s) {
    EXPECT_EQ(out.value().token_ids[s], golden_.tokens[s]) << "step " << s;
  }
  EXPECT_EQ(out.value().finish_reason, "length");
}

TEST_P(GoldenTest, ChunkingAndBlockSizeDoNotChangeLogits) {
  auto whole = make_engine(16);
  auto small_blocks = make_engine(4);
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(small_blocks, nullptr);
  auto a = score(*whole, 0);
  auto b = score(*small_blocks, 5);  // prompt in chunks of 5 over blocks of 4 tokens
  ASSERT_EQ(a.size(), b.size());
  // f32 differs only by summation order. In bf16 (f16) the activations entering each GEMM (the
  // stored K/V) are rounded, so a different order can flip a rounding; the difference is of
  // that order.
  const double tolerance = is_bf16(golden_) ? 1e-2 : is_f16(golden_) ? 1e-3 : 1e-5;
  for (size_t s = 0; s < a.size(); ++s) {
    double err = 0;
    for (size_t i = 0; i < a[s].size(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(a[s][i] - b[s][i])));
    }
    EXPECT_LE(err, tolerance * max_abs(a[s])) << "step " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(golden_names()),
                         [](const auto& info) { return info.param; });

TEST(GoldenFilesTest, EveryArchitectureAndDtypeIsCovered) {
  auto names = golden_names();
  for (const char* want : {"llama", "qwen2", "qwen3", "mistral"}) {
    for (const char* dtype : {"f32", "bf16"}) {
      bool found = std::any_of(names.begin(), names.end(), [&](const std::string& n) {
        return n.rfind(want, 0) == 0 && n.find(dtype) != std::string::npos;
      });
      EXPECT_TRUE(found) << "no golden file for " << want << " in " << dtype;
    }
  }
}

}  // namespace
}  // namespace tierserve

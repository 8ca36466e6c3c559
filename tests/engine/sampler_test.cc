#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace tierserve {
namespace {

const std::vector<int32_t> kNone;

// One sequence's view of the shared sampler: its parameters and its own generator.
struct SeqSampler {
  SeqSampler(const SamplingParams& p, int32_t vocab, uint64_t default_seed)
      : params(p), sampler(vocab), rng(p.seed.value_or(default_seed)) {}
  SampledToken sample(float* logits, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& output, const std::vector<int32_t>& suppressed) {
    return sampler.sample(logits, params, rng, prompt, output, suppressed);
  }
  SamplingParams params;
  Sampler sampler;
  std::mt19937_64 rng;
};

std::vector<float> logits_of(std::initializer_list<float> v) { return std::vector<float>(v); }

SampledToken sample_once(const SamplingParams& p, std::vector<float> logits,
                         const std::vector<int32_t>& prompt = kNone,
                         const std::vector<int32_t>& output = kNone,
                         const std::vector<int32_t>& suppressed = kNone, uint64_t seed = 0) {
  SeqSampler s(p, static_cast<int32_t>(logits.size()), seed);
  return s.sample(logits.data(), prompt, output, suppressed);
}

TEST(SamplerTest, GreedyTakesArgMaxAndReportsRawLogprob) {
  SamplingParams p;
  p.temperature = 0.0;
  p.logprobs = 0;
  auto t = sample_once(p, logits_of({0.5f, 2.0f, -1.0f, 1.9f}));
  EXPECT_EQ(t.token, 1);
  double z = std::exp(0.5) + std::exp(2.0) + std::exp(-1.0) + std::exp(1.9);
  EXPECT_NEAR(t.logprob, 2.0 - std::log(z), 1e-6);
  // Without logprobs asked for, none is computed.
  p.logprobs.reset();
  EXPECT_EQ(sample_once(p, logits_of({0.5f, 2.0f, -1.0f, 1.9f})).logprob, 0.0f);
  p.logprobs = 21;
  EXPECT_FALSE(p.validate().is_ok());
}

TEST(SamplerTest, TopLogprobsAreTheRawDistributionsBestFirst) {
  SamplingParams p;
  p.temperature = 0.0;
  p.repetition_penalty = 2.0;  // processing changes the choice, not the reported distribution
  p.logprobs = 3;
  const std::vector<float> raw = {0.5f, 2.0f, -1.0f, 1.9f, 2.0f};
  const std::vector<int32_t> prompt = {1, 4};
  auto t = sample_once(p, raw, prompt);
  EXPECT_EQ(t.token, 3);  // 2.0 / 2 = 1.0 < 1.9 after the penalty
  double z = 0;
  for (float l : raw) z += std::exp(static_cast<double>(l));
  ASSERT_EQ(t.num_top, 3);
  // Best first; the tie between ids 1 and 4 goes to the lower id.
  const int32_t want[] = {1, 4, 3};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(t.top[static_cast<size_t>(i)].token, want[i]);
    EXPECT_NEAR(t.top[static_cast<size_t>(i)].logprob,
                raw[static_cast<size_t>(want[i])] - std::log(z), 1e-6);
  }
  EXPECT_NEAR(t.logprob, 1.9 - std::log(z), 1e-6);
  // k beyond the vocabulary is cut to it; k = 0 gives none.
  p.logprobs = 20;
  EXPECT_EQ(sample_once(p, raw).num_top, 5);
  p.logprobs = 0;
  EXPECT_EQ(sample_once(p, raw).num_top, 0);
}

TEST(SamplerTest, SeedMakesSamplingReproducible) {
  SamplingParams p;
  p.seed = 1234;
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[static_cast<size_t>(i)] = std::sin(static_cast<float>(i));
  std::vector<int32_t> a, b;
  SeqSampler sa(p, 50, 0), sb(p, 50, 99);  // params.seed wins over the default seed
  for (int i = 0; i < 20; ++i) {
    auto la = logits, lb = logits;
    a.push_back(sa.sample(la.data(), kNone, kNone, kNone).token);
    b.push_back(sb.sample(lb.data(), kNone, kNone, kNone).token);
  }
  EXPECT_EQ(a, b);
}

TEST(SamplerTest, FrequenciesFollowTemperatureSoftmax) {
  SamplingParams p;
  p.temperature = 0.7;
  const std::vector<float> logits = {1.0f, 0.0f, -0.5f, 0.3f};
  SeqSampler s(p, 4, 7);
  std::vector<int> counts(4);
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    auto l = logits;
    counts[static_cast<size_t>(s.sample(l.data(), kNone, kNone, kNone).token)]++;
  }
  double z = 0;
  for (float l : logits) z += std::exp(l / 0.7);
  for (size_t i = 0; i < 4; ++i) {
    double expected = std::exp(logits[i] / 0.7) / z;
    EXPECT_NEAR(counts[i] / static_cast<double>(n), expected, 0.01) << i;
  }
}

TEST(SamplerTest, TopKTopPMinPRestrictCandidates) {
  const std::vector<float> logits = {3.0f, 2.9f, 0.0f, -1.0f, 2.8f};
  for (int trial = 0; trial < 3; ++trial) {
    SamplingParams p;
    if (trial == 0) p.top_k = 2;
    if (trial == 1) p.top_p = 0.5;   // top two hold ~0.36 + 0.33 of the mass
    if (trial == 2) p.min_p = 0.95;  // only tokens within 5% of the best
    SeqSampler s(p, 5, static_cast<uint64_t>(trial));
    for (int i = 0; i < 2000; ++i) {
      auto l = logits;
      int32_t t = s.sample(l.data(), kNone, kNone, kNone).token;
      if (trial == 2) {
        EXPECT_EQ(t, 0);  // p1 / p0 = e^-0.1 = 0.905 < 0.95
      } else {
        EXPECT_TRUE(t == 0 || t == 1) << t;
      }
    }
  }
}

TEST(SamplerTest, MinPKeepsOnlyCloseTokens) {
  SamplingParams p;
  p.min_p = 0.5;
  const std::vector<float> logits = {2.0f, 2.0f + std::log(0.6f), -5.0f};
  // p1 / p0 = 0.6 >= 0.5 is kept, p2 is dropped.
  SeqSampler s(p, 3, 3);
  bool saw1 = false;
  for (int i = 0; i < 2000; ++i) {
    auto l = logits;
    int32_t t = s.sample(l.data(), kNone, kNone, kNone).token;
    EXPECT_NE(t, 2);
    saw1 |= t == 1;
  }
  EXPECT_TRUE(saw1);
}

TEST(SamplerTest, RepetitionPenaltyAsHuggingFace) {
  SamplingParams p;
  p.temperature = 0.0;
  p.repetition_penalty = 2.0;
  // Token 0 (in the prompt) drops from 2.0 to 1.0; token 1 (negative, in the output) from -0.2
  // to -0.4; token 2 (1.5) wins.
  std::vector<float> l = {2.0f, -0.2f, 1.5f, -0.3f};
  SeqSampler s(p, 4, 0);
  EXPECT_EQ(s.sample(l.data(), {0}, {1}, kNone).token, 2);
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], -0.4f);
  EXPECT_FLOAT_EQ(l[3], -0.3f);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountOutputOnly) {
  SamplingParams p;
  p.temperature = 0.0;
  p.presence_penalty = 0.5;
  p.frequency_penalty = 0.25;
  std::vector<float> l = {2.0f, 1.0f, 1.0f};
  SeqSampler s(p, 3, 0);
  // Token 0 appears twice in the output: 2 - 0.5 - 2 * 0.25 = 1.0; the prompt does not count.
  s.sample(l.data(), {1}, {0, 0}, kNone);
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 1.0f);
}

TEST(SamplerTest, SuppressedTokensAreNeverChosen) {
  SamplingParams p;
  p.temperature = 0.0;
  auto t = sample_once(p, logits_of({5.0f, 1.0f, 0.0f}), kNone, kNone, {0});
  EXPECT_EQ(t.token, 1);
}

// What the engine does where the logits are (collect_penalties, then the backend's
// apply_penalties and its arg-max or choose_token, with the draw taken from the generator) picks
// the token Sampler::sample picks, over random parameters, penalties and suppressed tokens.
TEST(SamplerTest, BackendPathPicksTheSamplersToken) {
  const int32_t vocab = 500;
  std::mt19937 gen(99);
  std::uniform_real_distribution<float> logit(-6.0f, 6.0f);
  Sampler sampler(vocab);
  SamplingScratch scratch(vocab);
  std::vector<int32_t> entry(static_cast<size_t>(vocab), -1);
  for (int trial = 0; trial < 300; ++trial) {
    SamplingParams p;
    p.temperature = trial % 4 == 0 ? 0.0 : 0.5 + 0.1 * (trial % 7);
    p.top_k = trial % 3 == 0 ? 0 : 5 + trial % 40;
    p.top_p = trial % 5 == 0 ? 1.0 : 0.5 + 0.05 * (trial % 9);
    p.min_p = trial % 6 == 0 ? 0.05 : 0.0;
    p.repetition_penalty = trial % 2 == 0 ? 1.0 : 1.3;
    p.presence_penalty = trial % 3 == 1 ? 0.4 : 0.0;
    p.frequency_penalty = trial % 5 == 2 ? 0.3 : 0.0;
    std::vector<int32_t> prompt, output, suppressed;
    for (int i = 0; i < 30; ++i) prompt.push_back(static_cast<int32_t>(gen() % vocab));
    for (int i = 0; i < 20; ++i) output.push_back(static_cast<int32_t>(gen() % 60));  // repeats
    if (trial % 4 == 1) suppressed = {2, 3, 7, vocab + 5};
    std::vector<float> logits(static_cast<size_t>(vocab));
    for (float& l : logits) l = logit(gen);
    std::vector<float> host = logits;
    std::mt19937_64 rng_host(static_cast<uint64_t>(trial)), rng_backend(rng_host);
    const int32_t want = sampler.sample(host.data(), p, rng_host, prompt, output, suppressed).token;

    std::vector<PenaltyRow> rows;
    std::vector<PenaltyToken> tokens;
    collect_penalties(0, p, prompt, output, suppressed, entry, rows, tokens);
    for (const PenaltyRow& r : rows) apply_penalties(logits.data(), r, tokens.data());
    int32_t got;
    if (p.greedy()) {
      got = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    } else {
      SampleRow row;
      row.temperature = p.temperature;
      row.top_k = p.top_k;
      row.top_p = p.top_p;
      row.min_p = p.min_p;
      row.uniform =
          std::generate_canonical<double, std::numeric_limits<double>::digits>(rng_backend);
      got = choose_token(logits.data(), vocab, row, scratch);
    }
    ASSERT_EQ(got, want) << "trial " << trial;
    ASSERT_TRUE(std::all_of(entry.begin(), entry.end(), [](int32_t e) { return e == -1; }));
  }
}

TEST(SamplingParamsTest, ValidateNamesTheField) {
  SamplingParams p;
  p.top_p = 0.0;
  EXPECT_NE(p.validate().message().find("top_p"), std::string::npos);
  p = SamplingParams{};
  p.temperature = -1;
  EXPECT_NE(p.validate().message().find("temperature"), std::string::npos);
  p = SamplingParams{};
  p.max_tokens = 0;
  EXPECT_NE(p.validate().message().find("max_tokens"), std::string::npos);
  p = SamplingParams{};
  p.min_tokens = 20;
  EXPECT_NE(p.validate().message().find("min_tokens"), std::string::npos);
  EXPECT_TRUE(SamplingParams{}.validate().is_ok());
}

}  // namespace
}  // namespace tierserve

#include "engine/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace tierserve {
namespace {

TEST(RopeTest, DefaultFrequencies) {
  auto f = rope_inv_freq(8, 10000.0, RopeScaling{});
  ASSERT_EQ(f.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(f[i], std::pow(10000.0, -2.0 * i / 8), 1e-7);
}

TEST(RopeTest, LinearDividesEveryFrequency) {
  RopeScaling s;
  s.type = RopeScalingType::kLinear;
  s.factor = 4.0;
  auto base = rope_inv_freq(16, 500.0, RopeScaling{});
  auto f = rope_inv_freq(16, 500.0, s);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], base[i] / 4.0, 1e-9);
}

TEST(RopeTest, Llama3ScalesByWavelengthBand) {
  RopeScaling s;
  s.type = RopeScalingType::kLlama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 64;  // low band: wavelength > 64; high: < 16
  auto base = rope_inv_freq(32, 10000.0, RopeScaling{});
  auto f = rope_inv_freq(32, 10000.0, s);
  int high = 0, medium = 0, low = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 16) {
      EXPECT_DOUBLE_EQ(f[i], base[i]);
      ++high;
    } else if (wavelen > 64) {
      EXPECT_NEAR(f[i], base[i] / 8.0, 1e-12);
      ++low;
    } else {
      double smooth = (64 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(f[i], (1 - smooth) * base[i] / 8 + smooth * base[i], 1e-12);
      ++medium;
    }
  }
  EXPECT_GT(high, 0);
  EXPECT_GT(medium, 0);
  EXPECT_GT(low, 0);
}

TEST(RopeTest, TablesHoldCosAndSinOfPositionTimesFrequency) {
  RopeCache cache(8, 10000.0, RopeScaling{}, 32, RopeStyle::kNeox);
  const RopeTable& t = cache.table();
  EXPECT_EQ(t.rotary_dim, 8);
  EXPECT_EQ(t.max_positions, 32);
  for (int p : {0, 5, 31}) {
    for (int i = 0; i < 4; ++i) {
      double a = p * cache.inv_freq()[static_cast<size_t>(i)];
      EXPECT_NEAR(t.cos[p * 4 + i], std::cos(a), 1e-5);
      EXPECT_NEAR(t.sin[p * 4 + i], std::sin(a), 1e-5);
    }
  }
}

}  // namespace
}  // namespace tierserve

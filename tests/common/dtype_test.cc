#include "common/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace tierserve {
namespace {

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  DType d;
  ASSERT_TRUE(parse_dtype("bfloat16", &d));
  EXPECT_EQ(d, DType::kBF16);
  ASSERT_TRUE(parse_dtype("F16", &d));
  EXPECT_EQ(d, DType::kF16);
  EXPECT_FALSE(parse_dtype("F8_E4M3", &d));
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: rounds up to even.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  for (int i = 0; i < 10000; ++i) {
    float x = dist(rng);
    float y = bf16_to_f32(f32_to_bf16(x));
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * (1.0f / 256.0f)) << x;
  }
}

TEST(DTypeTest, F16RoundTripsEveryHalf) {
  // Every finite half converts to f32 and back to itself.
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    uint16_t v = static_cast<uint16_t>(h);
    if ((v & 0x7c00u) == 0x7c00u && (v & 0x3ffu) != 0) continue;  // NaN payloads
    EXPECT_EQ(f32_to_f16(f16_to_f32(v)), v) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                      // rounds to infinity
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
}

TEST(DTypeTest, ConvertBetweenTypes) {
  float src[4] = {1.5f, -2.25f, 0.0f, 1024.0f};
  uint16_t half[4];
  float back[4];
  convert(src, DType::kF32, half, DType::kF16, 4);
  convert(half, DType::kF16, back, DType::kF32, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);
  convert(src, DType::kF32, half, DType::kBF16, 4);
  convert(half, DType::kBF16, back, DType::kF32, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], src[i]);
}

}  // namespace
}  // namespace tierserve

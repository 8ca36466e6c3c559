// Q8 (W8A16) weights: the layout's checks, and the fused gemm of every kernel path and route (Q8
// GEMV, batch-invariant groups, dequantized panels for oneDNN) against dequantize-then-matmul in
// double precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/q8_weight.h"
#include "tests/kernels/quantized_gemm_util.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::Random;

TEST(Q8WeightTest, LayoutTakesGroupsOf16Or32) {
  auto l = Q8Layout::make(3, 64, 16);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l.value().scales_offset, 192u);  // 3 x 64 values
  EXPECT_EQ(l.value().bytes, 192u + 64u);    // 3 x 4 scales of 4 bytes, aligned
  for (const auto& [k, g] : {std::pair{64, 64}, std::pair{48, 16}, std::pair{64, 8}}) {
    auto bad = Q8Layout::make(3, k, g);
    ASSERT_FALSE(bad.is_ok()) << k << " " << g;
    EXPECT_NE(bad.status().message().find("8-bit weight"), std::string::npos);
  }
}

TEST(Q8WeightTest, MinsFollowTheScales) {
  auto l = Q8Layout::make(3, 64, 16, /*with_mins=*/true);
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l.value().scales_offset, 192u);
  EXPECT_EQ(l.value().mins_offset, 256u);  // 48 bytes of scales, aligned
  EXPECT_EQ(l.value().bytes, 320u);
  const TensorView v = q8_view(nullptr, l.value());
  EXPECT_TRUE(v.with_mins);
  EXPECT_EQ(Q8Layout::of(v).mins_offset, 256u);
}

// A random blob: int8 values over the whole range, f32 scales ~1e-3, and mins ~1e-2 (of
// either sign) when the layout has them.
std::vector<uint8_t> random_blob(const Q8Layout& l, Random& rng) {
  std::vector<uint8_t> blob(l.bytes);
  for (int64_t i = 0; i < l.n * l.k; ++i)
    blob[static_cast<size_t>(i)] = static_cast<uint8_t>(rng.index(256));
  for (int64_t g = 0; g < l.n * l.groups(); ++g) {
    const float s = rng.value(2e-3f);
    std::memcpy(blob.data() + l.scales_offset + g * 4, &s, 4);
    if (l.with_mins) {
      const float m = rng.value(2e-2f);
      std::memcpy(blob.data() + l.mins_offset + g * 4, &m, 4);
    }
  }
  return blob;
}

struct Q8Case {
  int64_t m, n, k;
  int32_t group_size;
  bool bias;
  bool mins = false;
};

const Q8Case kQ8Cases[] = {
    {1, 64, 256, 16, false},      {1, 40, 512, 32, true},         {3, 72, 256, 16, true},
    {6, 24, 768, 32, false},      {37, 66, 512, 16, true},        {1, 48, 256, 32, false, true},
    {4, 40, 512, 16, true, true}, {35, 24, 256, 32, false, true},
};

class Q8GemmTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
  }
};

// Every route (default, batch-invariant, panels for every m > 0) against dequantize-then-matmul
// in double; m = 1 rows of the batch-invariant route bitwise equal to the same row alone.
TEST_P(Q8GemmTest, FusedGemmMatchesDequantizeThenMatmul) {
  ThreadPool pool(3, nullptr);
  const CpuKernels& kernels = cpu_kernels(GetParam());
  Random rng(9);
  for (const Q8Case& c : kQ8Cases) {
    SCOPED_TRACE(::testing::Message() << c.m << "x" << c.n << "x" << c.k << " g" << c.group_size
                                      << (c.mins ? " mins" : ""));
    auto layout = Q8Layout::make(c.n, c.k, c.group_size, c.mins);
    ASSERT_TRUE(layout.is_ok());
    const std::vector<uint8_t> blob = random_blob(layout.value(), rng);
    std::vector<float> w(static_cast<size_t>(c.n * c.k));
    dequantize_q8_rows(blob.data(), layout.value(), 0, c.n, w.data());
    testing::expect_gemm_routes_match_dense(
        &pool, kernels, q8_view(const_cast<uint8_t*>(blob.data()), layout.value()), w, c.m, c.n,
        c.k, c.bias, rng);
  }
}

// Each weight is formed exactly as dequantize_q8_rows forms it (the product, then the difference,
// each rounded; never one fused multiply-add): with x one-hot at column c, y[r] is w[r, c].
TEST_P(Q8GemmTest, GemvFormsEachWeightAsTheDequantizer) {
  const CpuKernels& kernels = cpu_kernels(GetParam());
  Random rng(5);
  for (const bool mins : {false, true}) {
    SCOPED_TRACE(mins ? "with mins" : "without mins");
    const int64_t n = 8, k = 64;
    auto layout = Q8Layout::make(n, k, 16, mins);
    ASSERT_TRUE(layout.is_ok());
    const Q8Layout& l = layout.value();
    const std::vector<uint8_t> blob = random_blob(l, rng);
    std::vector<float> w(static_cast<size_t>(n * k)), x(static_cast<size_t>(k)), y(n);
    dequantize_q8_rows(blob.data(), l, 0, n, w.data());
    for (int64_t c = 0; c < k; ++c) {
      std::fill(x.begin(), x.end(), 0.0f);
      x[static_cast<size_t>(c)] = 1.0f;
      Q8GemvArgs a;
      a.x = x.data();
      a.ldx = k;
      a.m = 1;
      a.k = k;
      a.group_size = l.group_size;
      a.values = reinterpret_cast<const int8_t*>(blob.data());
      a.scales = reinterpret_cast<const float*>(blob.data() + l.scales_offset);
      a.mins = mins ? reinterpret_cast<const float*>(blob.data() + l.mins_offset) : nullptr;
      a.y = y.data();
      a.ldy = n;
      kernels.gemv_q8(a, 0, n);
      for (int64_t r = 0; r < n; ++r) {
        ASSERT_EQ(y[static_cast<size_t>(r)], w[static_cast<size_t>(r * k + c)])
            << "row " << r << " column " << c;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, Q8GemmTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

}  // namespace
}  // namespace tierserve

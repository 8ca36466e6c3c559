// Q8 (W8A16) weights: the layout's checks, and the fused gemm of every kernel path and route (Q8
// GEMV, batch-invariant groups, dequantized panels for oneDNN) against dequantize-then-matmul in
// double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/q8_weight.h"
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

// A random blob: int8 values over the whole range, f32 scales ~1e-3.
std::vector<uint8_t> random_blob(const Q8Layout& l, Random& rng) {
  std::vector<uint8_t> blob(l.bytes);
  for (int64_t i = 0; i < l.n * l.k; ++i) blob[static_cast<size_t>(i)] = static_cast<uint8_t>(rng.index(256));
  for (int64_t g = 0; g < l.n * l.groups(); ++g) {
    const float s = rng.value(2e-3f);
    std::memcpy(blob.data() + l.scales_offset + g * 4, &s, 4);
  }
  return blob;
}

struct Q8Case {
  int64_t m, n, k;
  int32_t group_size;
  bool bias;
};

const Q8Case kQ8Cases[] = {
    {1, 64, 256, 16, false}, {1, 40, 512, 32, true},  {3, 72, 256, 16, true},
    {6, 24, 768, 32, false}, {37, 66, 512, 16, true},
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
    SCOPED_TRACE(::testing::Message() << c.m << "x" << c.n << "x" << c.k << " g" << c.group_size);
    auto layout = Q8Layout::make(c.n, c.k, c.group_size);
    ASSERT_TRUE(layout.is_ok());
    const std::vector<uint8_t> blob = random_blob(layout.value(), rng);
    std::vector<float> w(static_cast<size_t>(c.n * c.k));
    dequantize_q8_rows(blob.data(), layout.value(), 0, c.n, w.data());
    const std::vector<float> x = rng.values(static_cast<size_t>(c.m * c.k));
    const std::vector<float> bias = rng.values(static_cast<size_t>(c.n));
    std::vector<double> want(static_cast<size_t>(c.m * c.n)), mag(want.size());
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t r = 0; r < c.n; ++r) {
        double s = c.bias ? bias[r] : 0.0, a = c.bias ? std::fabs(bias[r]) : 0.0;
        for (int64_t j = 0; j < c.k; ++j) {
          s += static_cast<double>(x[i * c.k + j]) * w[r * c.k + j];
          a += std::fabs(static_cast<double>(x[i * c.k + j]) * w[r * c.k + j]);
        }
        want[i * c.n + r] = s;
        mag[i * c.n + r] = a;
      }
    }
    const TensorView wv = q8_view(const_cast<uint8_t*>(blob.data()), layout.value());
    const TensorView xv =
        TensorView::contiguous(const_cast<float*>(x.data()), DType::kF32, {c.m, c.k});
    const TensorView bv =
        TensorView::contiguous(const_cast<float*>(bias.data()), DType::kF32, {c.n});
    for (int route = 0; route < 3; ++route) {
      CpuGemmOptions options;
      options.batch_invariant = route == 1;
      if (route == 2) options.gemv_max_m = 0;  // panels for every m
      CpuGemm gemm(&pool, &kernels, options);
      std::vector<float> y = testing::poisoned(static_cast<size_t>(c.m * c.n));
      gemm.run(xv, wv, c.bias ? &bv : nullptr,
               TensorView::contiguous(y.data(), DType::kF32, {c.m, c.n}));
      for (size_t e = 0; e < y.size(); ++e) {
        // f32 sums of f32 weights times x: 2e-5 of the magnitude.
        ASSERT_NEAR(y[e], want[e], 2e-5 * mag[e] + 1e-6) << "route " << route << " element " << e;
      }
      if (route == 1) {
        for (int64_t i = 0; i < c.m; ++i) {
          std::vector<float> alone(static_cast<size_t>(c.n));
          gemm.run(xv.rows(i, i + 1), wv, c.bias ? &bv : nullptr,
                   TensorView::contiguous(alone.data(), DType::kF32, {1, c.n}));
          for (int64_t r = 0; r < c.n; ++r) ASSERT_EQ(alone[r], y[i * c.n + r]) << "row " << i;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, Q8GemmTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

}  // namespace
}  // namespace tierserve

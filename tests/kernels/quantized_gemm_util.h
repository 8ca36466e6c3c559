// The check shared by the quantized-weight gemm tests (q4_gemm_test, q8_gemm_test).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/cpu_gemm.h"
#include "tests/kernels/test_util.h"

namespace tierserve::testing {

// Multiplies m random rows of x (and, when `use_bias`, a random bias; both drawn from `rng` in
// that order) by the quantized weight `wv` [n, k] through every CpuGemm route (default,
// batch-invariant, panels for every m > 0) and checks y against dequantize-then-matmul in double
// over `w`, wv's values in natural input order: within 2e-5 of the sum of |x * w| (f32 sums of
// f32 products, a scale or zero term folded per group). Rows of the batch-invariant route must be
// bitwise equal to the same row run alone.
inline void expect_gemm_routes_match_dense(ThreadPool* pool, const CpuKernels& kernels,
                                           const TensorView& wv, const std::vector<float>& w,
                                           int64_t m, int64_t n, int64_t k, bool use_bias,
                                           Random& rng) {
  const std::vector<float> x = rng.values(static_cast<size_t>(m * k));
  const std::vector<float> bias = rng.values(static_cast<size_t>(n));
  std::vector<double> want(static_cast<size_t>(m * n)), mag(want.size());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double s = use_bias ? bias[r] : 0.0, a = use_bias ? std::fabs(bias[r]) : 0.0;
      for (int64_t j = 0; j < k; ++j) {
        s += static_cast<double>(x[i * k + j]) * w[r * k + j];
        a += std::fabs(static_cast<double>(x[i * k + j]) * w[r * k + j]);
      }
      want[i * n + r] = s;
      mag[i * n + r] = a;
    }
  }
  const TensorView xv = TensorView::contiguous(const_cast<float*>(x.data()), DType::kF32, {m, k});
  const TensorView bv = TensorView::contiguous(const_cast<float*>(bias.data()), DType::kF32, {n});
  for (int route = 0; route < 3; ++route) {
    CpuGemmOptions options;
    options.batch_invariant = route == 1;
    if (route == 2) options.gemv_max_m = 0;  // panels for every m
    CpuGemm gemm(pool, &kernels, options);
    std::vector<float> y = poisoned(static_cast<size_t>(m * n));
    gemm.run(xv, wv, use_bias ? &bv : nullptr,
             TensorView::contiguous(y.data(), DType::kF32, {m, n}));
    for (size_t e = 0; e < y.size(); ++e) {
      ASSERT_NEAR(y[e], want[e], 2e-5 * mag[e] + 1e-6) << "route " << route << " element " << e;
    }
    if (route == 1) {
      for (int64_t i = 0; i < m; ++i) {
        std::vector<float> alone(static_cast<size_t>(n));
        gemm.run(xv.rows(i, i + 1), wv, use_bias ? &bv : nullptr,
                 TensorView::contiguous(alone.data(), DType::kF32, {1, n}));
        for (int64_t r = 0; r < n; ++r) ASSERT_EQ(alone[r], y[i * n + r]) << "row " << i;
      }
    }
  }
}

}  // namespace tierserve::testing

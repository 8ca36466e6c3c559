// gemm on every kernel path and through every route (GEMV kernels, oneDNN native, oneDNN on f32
// panels) against a double-precision naive matmul.
//
// Error bounds, as a fraction of sum_j |x_j w_j| + |bias| for each output:
//   every route: 2e-5. All products are exact in f32 (bf16 and f16 widen exactly) and the sums
//   run in f32: about sqrt(k) * 2^-24 of the magnitude for random signs, far below 2e-5 for the
//   k used here.
//   oneDNN with a native bf16/f16 kernel first rounds x to the weight dtype (relative error up
//   to 2^-9 for bf16, 2^-11 for f16 per product); the reference then uses the same rounded x,
//   and the 2e-5 bound still applies to everything else.
#include "kernels/cpu/cpu_gemm.h"

#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/onednn_matmul.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::Random;

struct GemmCase {
  int64_t m, n, k, ldx;  // ldx > k: row-strided x
};

const GemmCase kCases[] = {
    {1, 1, 1, 1},     {1, 7, 13, 13},  {1, 64, 896, 901},   {2, 33, 70, 70},    {3, 100, 129, 131},
    {4, 257, 96, 96}, {5, 31, 17, 20}, {17, 100, 129, 129}, {64, 96, 200, 203}, {1, 4864, 96, 96},
};

enum class BiasKind { kNone, kF32, kBF16, kF16 };

// Runs one gemm through `run` and compares it with the double reference. `x_dtype` is the dtype
// x is rounded to by the route under test (f32 when it is not rounded).
template <typename RunFn>
void check_gemm(const GemmCase& c, DType wdt, BiasKind bias_kind, DType x_dtype, Random& rng,
                const RunFn& run) {
  std::vector<float> x = rng.values(static_cast<size_t>(c.m * c.ldx));
  const std::vector<float> w = testing::rounded(rng.values(static_cast<size_t>(c.n * c.k)), wdt);
  testing::TypedBuffer wbuf(w, wdt);
  const DType bdt = bias_kind == BiasKind::kBF16  ? DType::kBF16
                    : bias_kind == BiasKind::kF16 ? DType::kF16
                                                  : DType::kF32;
  const std::vector<float> bias = testing::rounded(rng.values(static_cast<size_t>(c.n)), bdt);
  testing::TypedBuffer bbuf(bias, bdt);
  std::vector<float> y = testing::poisoned(static_cast<size_t>(c.m * c.n));

  TensorView xv = TensorView::contiguous(x.data(), DType::kF32, {c.m, c.k});
  xv.strides[0] = c.ldx;
  const TensorView wv = TensorView::contiguous(wbuf.data(), wdt, {c.n, c.k});
  const TensorView bv = TensorView::contiguous(bbuf.data(), bdt, {c.n});
  const TensorView yv = TensorView::contiguous(y.data(), DType::kF32, {c.m, c.n});
  run(xv, wv, bias_kind == BiasKind::kNone ? nullptr : &bv, yv);

  const std::vector<float> xr = testing::rounded(x, x_dtype);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t r = 0; r < c.n; ++r) {
      double ref = 0, mag = 0;
      if (bias_kind != BiasKind::kNone) {
        ref = bias[r];
        mag = std::fabs(bias[r]);
      }
      for (int64_t j = 0; j < c.k; ++j) {
        const double p = static_cast<double>(xr[i * c.ldx + j]) * w[r * c.k + j];
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y[i * c.n + r], ref, 2e-5 * mag)
          << "m=" << c.m << " n=" << c.n << " k=" << c.k << " w " << dtype_name(wdt) << " bias "
          << static_cast<int>(bias_kind) << " at [" << i << ", " << r << "]";
    }
  }
}

class CpuGemmTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
  }
};

// The x dtype a route rounds to: the weight dtype on oneDNN's native low-precision kernels.
DType rounded_x_dtype(const GemmCase& c, DType wdt, const CpuGemmOptions& options) {
  static OnednnMatmul probe(1);
  if (c.m <= options.gemv_max_m || wdt == DType::kF32 || !options.native_low_precision) {
    return DType::kF32;
  }
  return probe.supports(wdt) ? wdt : DType::kF32;
}

TEST_P(CpuGemmTest, BackendGemmMatchesDoubleReference) {
  auto backend = testing::make_cpu_backend(GetParam(), 2);
  ASSERT_NE(backend, nullptr);
  Random rng(31);
  for (const GemmCase& c : kCases) {
    for (DType wdt : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (BiasKind b : {BiasKind::kNone, BiasKind::kF32, BiasKind::kBF16, BiasKind::kF16}) {
        check_gemm(c, wdt, b, rounded_x_dtype(c, wdt, CpuGemmOptions{}), rng,
                   [&](const TensorView& x, const TensorView& w, const TensorView* bias,
                       const TensorView& y) { backend->gemm(x, w, bias, y); });
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

// Each route forced: oneDNN even for m = 1, and the f32-panel fallback for bf16/f16.
TEST_P(CpuGemmTest, EveryRouteMatchesDoubleReference) {
  ThreadPool pool(3, nullptr);
  const CpuKernels& kernels = cpu_kernels(GetParam());
  Random rng(32);
  for (int gemv_max_m : {0, kGemvMaxM}) {
    for (bool native : {true, false}) {
      CpuGemmOptions options;
      options.gemv_max_m = gemv_max_m;
      options.native_low_precision = native;
      CpuGemm gemm(&pool, &kernels, options);
      for (const GemmCase& c : kCases) {
        for (DType wdt : {DType::kF32, DType::kBF16, DType::kF16}) {
          check_gemm(c, wdt, BiasKind::kF32, rounded_x_dtype(c, wdt, options), rng,
                     [&](const TensorView& x, const TensorView& w, const TensorView* bias,
                         const TensorView& y) { gemm.run(x, w, bias, y); });
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// Weights packed once (CpuGemm::pack) give the same products as plain ones through oneDNN, for
// every m (1 included), thread count (so one, two or three column slices, the last one
// narrower) and bias; the packed bytes are exactly what packed_bytes() reserved.
TEST_P(CpuGemmTest, PackedWeightsMatchDoubleReference) {
  const CpuKernels& kernels = cpu_kernels(GetParam());
  Random rng(33);
  const GemmCase cases[] = {{1, 1, 1, 1},       {1, 100, 129, 131}, {2, 127, 64, 64},
                            {4, 128, 96, 96},   {5, 300, 70, 72},   {32, 448, 896, 896},
                            {33, 1000, 17, 17}, {64, 200, 129, 200}};
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads, nullptr);
    CpuGemm gemm(&pool, &kernels, CpuGemmOptions{});
    for (DType wdt : {DType::kBF16, DType::kF16}) {
      if (gemm.packed_bytes(wdt, 64, 64) == 0) continue;  // no native oneDNN kernel here
      for (const GemmCase& c : cases) {
        for (BiasKind b : {BiasKind::kNone, BiasKind::kBF16}) {
          const uint64_t bytes = gemm.packed_bytes(wdt, c.n, c.k);
          ASSERT_GT(bytes, 0u);
          // One guard byte past the end catches a pack that writes more than it reserved.
          std::vector<uint8_t> packed(bytes + 64 + 1, 0xA5);
          uint8_t* dst = packed.data() + (64 - reinterpret_cast<uintptr_t>(packed.data()) % 64);
          dst[bytes] = 0x5A;
          check_gemm(c, wdt, b, wdt, rng,
                     [&](const TensorView& x, const TensorView& w, const TensorView* bias,
                         const TensorView& y) {
                       const TensorView pw = gemm.pack(w, dst);
                       EXPECT_TRUE(pw.packed);
                       gemm.run(x, pw, bias, y);
                     });
          ASSERT_EQ(dst[bytes], 0x5A) << "pack wrote past packed_bytes()";
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// Packing is off where it would change results or cannot help.
TEST(CpuGemmPackTest, NoPackedLayoutInBatchInvariantModeOrForF32) {
  ThreadPool pool(2, nullptr);
  const CpuKernels& kernels = cpu_kernels(resolve_cpu_isa(CpuIsa::kAuto));
  CpuGemmOptions invariant;
  invariant.batch_invariant = true;
  CpuGemm gemm(&pool, &kernels, invariant);
  EXPECT_EQ(gemm.packed_bytes(DType::kBF16, 256, 256), 0u);
  CpuGemmOptions off;
  off.pack_weights = false;
  CpuGemm gemm_off(&pool, &kernels, off);
  EXPECT_EQ(gemm_off.packed_bytes(DType::kBF16, 256, 256), 0u);
  CpuGemm plain(&pool, &kernels, CpuGemmOptions{});
  EXPECT_EQ(plain.packed_bytes(DType::kF32, 256, 256), 0u);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CpuGemmTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

TEST(CpuGemmCacheTest, SteadyStateCreatesNoPrimitives) {
  auto backend = testing::make_cpu_backend(CpuIsa::kAuto, 2);
  ASSERT_NE(backend, nullptr);
  Random rng(33);
  const int64_t m = 9, n = 40, k = 24;
  std::vector<float> x = rng.values(m * k), y(m * n);
  const std::vector<uint16_t> w = testing::to_half(rng.values(n * k), DType::kBF16);
  const TensorView xv = TensorView::contiguous(x.data(), DType::kF32, {m, k});
  const TensorView wv =
      TensorView::contiguous(const_cast<uint16_t*>(w.data()), DType::kBF16, {n, k});
  const TensorView yv = TensorView::contiguous(y.data(), DType::kF32, {m, n});
  backend->gemm(xv, wv, nullptr, yv);
  const int64_t created = backend->onednn_primitives_created();
  EXPECT_GE(created, 1);
  for (int i = 0; i < 5; ++i) backend->gemm(xv, wv, nullptr, yv);
  EXPECT_EQ(backend->onednn_primitives_created(), created);
  // Another output width is another shape.
  backend->gemm(xv, wv.rows(0, n - 8), nullptr,
                TensorView::contiguous(y.data(), DType::kF32, {m, n - 8}));
  const int64_t after_new_shape = backend->onednn_primitives_created();
  EXPECT_GT(after_new_shape, created);
  // GEMV sizes never reach oneDNN.
  backend->gemm(xv.rows(0, 1), wv, nullptr, yv.rows(0, 1));
  EXPECT_EQ(backend->onednn_primitives_created(), after_new_shape);
}

TEST(CpuGemmCacheTest, ZeroSizedShapes) {
  auto backend = testing::make_cpu_backend(CpuIsa::kAuto, 2);
  ASSERT_NE(backend, nullptr);
  std::vector<float> w(6, 1.0f), bias = {0.5f, -1.5f}, y = testing::poisoned(4);
  float x_unused = 0;
  // k = 0: y is the bias.
  const TensorView bv = TensorView::contiguous(bias.data(), DType::kF32, {2});
  backend->gemm(TensorView::contiguous(&x_unused, DType::kF32, {2, 0}),
                TensorView::contiguous(w.data(), DType::kF32, {2, 0}), &bv,
                TensorView::contiguous(y.data(), DType::kF32, {2, 2}));
  EXPECT_EQ(y, (std::vector<float>{0.5f, -1.5f, 0.5f, -1.5f}));
  // m = 0: nothing to do.
  backend->gemm(TensorView::contiguous(&x_unused, DType::kF32, {0, 3}),
                TensorView::contiguous(w.data(), DType::kF32, {2, 3}), nullptr,
                TensorView::contiguous(y.data(), DType::kF32, {0, 2}));
}

}  // namespace
}  // namespace tierserve

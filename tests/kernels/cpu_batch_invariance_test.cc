// Batch invariance of the CPU gemm (CpuGemmOptions::batch_invariant, BackendOptions::deterministic;
// DESIGN.md §6 invariant 1), on every kernel path and weight dtype:
//   - the GEMV kernels give each row of x bitwise the same result for M = 1..kGemvMaxM rows and
//     for any split of the output columns;
//   - a batch-invariant gemm of m rows equals, bitwise, m = 1 calls row by row (the ordinary
//     decode path), and calls on sub-batches at any offset and with any ldx, with 1 thread and
//     with several;
//   - and stays within 1e-5 of sum_j |x_j w_j| + |bias| of a double-precision reference: the
//     kernels widen bf16/f16 weights exactly and keep x in f32, so only the f32 summation errs
//     (about sqrt(k) * 2^-24 of that magnitude for random signs).
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/backend_registry.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::Random;

const DType kWeightDtypes[] = {DType::kF32, DType::kBF16, DType::kF16};

// Inputs of one gemm: x [m, k] with row stride ldx, w [n, k] of `wdt` (values already rounded to
// it), an f32 bias [n].
struct Problem {
  int64_t m, n, k, ldx;
  DType wdt;
  std::vector<float> x, w, bias;
  testing::TypedBuffer wbuf;

  Problem(int64_t m_, int64_t n_, int64_t k_, int64_t ldx_, DType wdt_, Random& rng)
      : m(m_),
        n(n_),
        k(k_),
        ldx(ldx_),
        wdt(wdt_),
        x(rng.values(static_cast<size_t>(m_ * ldx_))),
        w(testing::rounded(rng.values(static_cast<size_t>(n_ * k_)), wdt_)),
        bias(rng.values(static_cast<size_t>(n_))),
        wbuf(w, wdt_) {}

  TensorView weights() { return TensorView::contiguous(wbuf.data(), wdt, {n, k}); }
  TensorView bias_view() { return TensorView::contiguous(bias.data(), DType::kF32, {n}); }
  // Rows [begin, begin + rows) of x, row stride ldx.
  TensorView x_rows(int64_t begin, int64_t rows) {
    TensorView v = TensorView::contiguous(x.data() + begin * ldx, DType::kF32, {rows, k});
    v.strides[0] = ldx;
    return v;
  }
};

bool bitwise_equal(const float* a, const float* b, int64_t count) {
  return std::memcmp(a, b, static_cast<size_t>(count) * sizeof(float)) == 0;
}

// The first (row, column) where y [rows, n] and want [rows, n] differ bitwise, for the message.
std::string first_difference(const float* y, const float* want, int64_t rows, int64_t n) {
  for (int64_t i = 0; i < rows * n; ++i) {
    if (std::memcmp(&y[i], &want[i], sizeof(float)) != 0) {
      std::ostringstream out;
      out << std::setprecision(9) << "first at [" << i / n << ", " << i % n << "]: " << y[i]
          << " vs " << want[i];
      return out.str();
    }
  }
  return "none";
}

class BatchInvarianceTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
  }
  const CpuKernels& kernels() const { return cpu_kernels(GetParam()); }
};

// The kernels directly: row i of an M-row call equals the 1-row call on row i alone, and a call
// over all columns equals calls over pieces of them.
TEST_P(BatchInvarianceTest, GemvRowsMatchSingleRowCalls) {
  const CpuKernels& kern = kernels();
  Random rng(71);
  for (DType wdt : kWeightDtypes) {
    const GemvFn gemv = wdt == DType::kF32    ? kern.gemv_f32
                        : wdt == DType::kBF16 ? kern.gemv_bf16
                                              : kern.gemv_f16;
    const PackGemvXFn pack = wdt == DType::kBF16 ? kern.pack_gemv_x_bf16 : kern.pack_gemv_x;
    for (int64_t k : {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 896, 4864}) {
      for (bool with_bias : {false, true}) {
        const int64_t n = 23, xs = gemv_x_stride(k);
        Problem p(kGemvMaxM, n, k, k + 5, wdt, rng);
        const float* bias = with_bias ? p.bias.data() : nullptr;
        // 1-row reference for each row.
        std::vector<float> packed(static_cast<size_t>(kGemvMaxM * xs));
        std::vector<float> want = testing::poisoned(static_cast<size_t>(kGemvMaxM * n));
        for (int32_t i = 0; i < kGemvMaxM; ++i) {
          pack(p.x.data() + i * p.ldx, p.ldx, 1, k, packed.data());
          gemv(GemvArgs{packed.data(), 1, k, p.wbuf.data(), bias, want.data() + i * n, n}, 0, n);
        }
        for (int32_t rows = 1; rows <= kGemvMaxM; ++rows) {
          for (int32_t first = 0; first + rows <= kGemvMaxM; ++first) {
            pack(p.x.data() + first * p.ldx, p.ldx, rows, k, packed.data());
            std::vector<float> y = testing::poisoned(static_cast<size_t>(rows * n));
            const GemvArgs args{packed.data(), rows, k, p.wbuf.data(), bias, y.data(), n};
            // Columns in three uneven pieces.
            gemv(args, 0, 5);
            gemv(args, 5, 6);
            gemv(args, 6, n);
            ASSERT_TRUE(bitwise_equal(y.data(), want.data() + first * n, rows * n))
                << dtype_name(wdt) << " k=" << k << " bias=" << with_bias << " M=" << rows
                << " rows from " << first << ": "
                << first_difference(y.data(), want.data() + first * n, rows, n);
          }
        }
      }
    }
  }
}

// y [m, n] from a batch-invariant CpuGemm on `pool`.
std::vector<float> run_gemm(CpuGemm& gemm, Problem& p, int64_t first, int64_t rows,
                            bool with_bias) {
  std::vector<float> y = testing::poisoned(static_cast<size_t>(rows * p.n));
  const TensorView bias = p.bias_view();
  gemm.run(p.x_rows(first, rows), p.weights(), with_bias ? &bias : nullptr,
           TensorView::contiguous(y.data(), DType::kF32, {rows, p.n}));
  return y;
}

TEST_P(BatchInvarianceTest, GemmEqualsRowByRowAndSubBatches) {
  CpuGemmOptions invariant;
  invariant.batch_invariant = true;
  ThreadPool one(1, nullptr), several(3, nullptr);
  // The reference: m = 1 calls through the default options, i.e. the ordinary decode path.
  CpuGemm decode(&one, &kernels(), CpuGemmOptions{});
  CpuGemm serial(&one, &kernels(), invariant), parallel(&several, &kernels(), invariant);
  Random rng(72);
  const int64_t m = 37, n = 300;
  for (DType wdt : kWeightDtypes) {
    for (int64_t k : {200, 896}) {
      for (bool with_bias : {true, false}) {
        Problem p(m, n, k, k + 3, wdt, rng);
        const std::string what = std::string(dtype_name(wdt)) + " k=" + std::to_string(k) +
                                 " bias=" + std::to_string(with_bias);
        // Row by row, each row copied to its own contiguous buffer (ldx = k).
        std::vector<float> want(static_cast<size_t>(m * n));
        for (int64_t i = 0; i < m; ++i) {
          std::vector<float> row(p.x.begin() + i * p.ldx, p.x.begin() + i * p.ldx + k);
          std::vector<float> y = testing::poisoned(static_cast<size_t>(n));
          const TensorView bias = p.bias_view();
          decode.run(TensorView::contiguous(row.data(), DType::kF32, {1, k}), p.weights(),
                     with_bias ? &bias : nullptr,
                     TensorView::contiguous(y.data(), DType::kF32, {1, n}));
          std::memcpy(want.data() + i * n, y.data(), static_cast<size_t>(n) * sizeof(float));
        }
        for (CpuGemm* gemm : {&serial, &parallel}) {
          const std::string threads = gemm == &serial ? " 1 thread" : " 3 threads";
          const std::vector<float> y = run_gemm(*gemm, p, 0, m, with_bias);
          ASSERT_TRUE(bitwise_equal(y.data(), want.data(), m * n))
              << what << threads
              << " whole batch: " << first_difference(y.data(), want.data(), m, n);
          for (int64_t rows : {1, 2, 3, 4, 5, 16}) {
            for (int64_t first : {int64_t{1}, int64_t{6}, m - rows}) {
              const std::vector<float> sub = run_gemm(*gemm, p, first, rows, with_bias);
              ASSERT_TRUE(bitwise_equal(sub.data(), want.data() + first * n, rows * n))
                  << what << threads << " rows [" << first << ", " << first + rows
                  << "): " << first_difference(sub.data(), want.data() + first * n, rows, n);
            }
          }
        }
        // Close to the double-precision product of the same (rounded) weights.
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < n; ++r) {
            double ref = with_bias ? p.bias[r] : 0.0;
            double mag = with_bias ? std::fabs(p.bias[r]) : 0.0;
            for (int64_t j = 0; j < k; ++j) {
              const double prod = static_cast<double>(p.x[i * p.ldx + j]) * p.w[r * k + j];
              ref += prod;
              mag += std::fabs(prod);
            }
            ASSERT_NEAR(want[i * n + r], ref, 1e-5 * mag)
                << what << " at [" << i << ", " << r << "]";
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, BatchInvarianceTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

// BackendOptions::deterministic reaches the CPU gemm: a prefill-sized bf16 batch through the
// Backend interface equals its rows computed one at a time.
TEST(DeterministicBackendTest, GemmIsBatchInvariant) {
  BackendOptions options;
  EXPECT_FALSE(options.deterministic);
  options.deterministic = true;
  options.num_threads = 2;
  auto created = create_backend(options);
  ASSERT_TRUE(created.is_ok()) << created.status().to_string();
  Backend& backend = *created.value();
  Random rng(73);
  const int64_t m = 24, n = 130, k = 896;
  Problem p(m, n, k, k, DType::kBF16, rng);
  std::vector<float> y = testing::poisoned(static_cast<size_t>(m * n));
  const TensorView bias = p.bias_view();
  backend.gemm(p.x_rows(0, m), p.weights(), &bias,
               TensorView::contiguous(y.data(), DType::kF32, {m, n}));
  for (int64_t i = 0; i < m; ++i) {
    std::vector<float> row = testing::poisoned(static_cast<size_t>(n));
    backend.gemm(p.x_rows(i, 1), p.weights(), &bias,
                 TensorView::contiguous(row.data(), DType::kF32, {1, n}));
    ASSERT_TRUE(bitwise_equal(row.data(), y.data() + i * n, n))
        << "row " << i << ": " << first_difference(y.data() + i * n, row.data(), 1, n);
  }
}

}  // namespace
}  // namespace tierserve

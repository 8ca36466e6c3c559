// The CpuBackend's element-wise and row ops (rmsnorm, add_rmsnorm, rope, silu_mul, embedding,
// gather_rows, softmax) and its memory functions, on every kernel path, against scalar
// references written here. Outputs start as NaN so that an element the op forgets shows up.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::kNaN;
using testing::Random;

class CpuOpsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
    backend_ = testing::make_cpu_backend(GetParam(), 3);
    ASSERT_NE(backend_, nullptr);
    ASSERT_EQ(backend_->isa(), GetParam());
  }
  std::unique_ptr<CpuBackend> backend_;
};

// Rows of `d` elements at stride `ld`.
TensorView strided(std::vector<float>& v, int64_t rows, int64_t d, int64_t ld) {
  TensorView t = TensorView::contiguous(v.data(), DType::kF32, {rows, d});
  t.strides[0] = ld;
  return t;
}

struct RowShape {
  int64_t m, d;
};
const RowShape kRowShapes[] = {{1, 1}, {1, 7}, {3, 16}, {5, 33}, {4, 896}, {67, 40}};

TEST_P(CpuOpsTest, RmsnormMatchesReferenceForEveryWeightDtype) {
  Random rng(21);
  const float eps = 1e-6f;
  for (const RowShape& s : kRowShapes) {
    for (DType wdt : {DType::kF32, DType::kBF16, DType::kF16}) {
      const int64_t ld = s.d + 3;  // x rows are strided
      std::vector<float> x = rng.values(static_cast<size_t>(s.m * ld), 2.0f);
      const std::vector<float> w = testing::rounded(rng.values(static_cast<size_t>(s.d)), wdt);
      testing::TypedBuffer wbuf(w, wdt);
      std::vector<float> y = testing::poisoned(static_cast<size_t>(s.m * s.d));
      backend_->rmsnorm(strided(x, s.m, s.d, ld), TensorView::contiguous(wbuf.data(), wdt, {s.d}),
                        eps, TensorView::contiguous(y.data(), DType::kF32, {s.m, s.d}));
      for (int64_t i = 0; i < s.m; ++i) {
        double ss = 0;
        for (int64_t j = 0; j < s.d; ++j) ss += static_cast<double>(x[i * ld + j]) * x[i * ld + j];
        const double inv = 1.0 / std::sqrt(ss / s.d + eps);
        for (int64_t j = 0; j < s.d; ++j) {
          const double ref = x[i * ld + j] * inv * w[j];
          ASSERT_NEAR(y[i * s.d + j], ref, 2e-5 * std::fabs(ref) + 1e-6)
              << "m=" << s.m << " d=" << s.d << " " << dtype_name(wdt);
        }
      }
      // In place: y aliases x.
      std::vector<float> inplace(x);
      const TensorView xv = strided(inplace, s.m, s.d, ld);
      backend_->rmsnorm(xv, TensorView::contiguous(wbuf.data(), wdt, {s.d}), eps, xv);
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.d; ++j) ASSERT_FLOAT_EQ(inplace[i * ld + j], y[i * s.d + j]);
        for (int64_t j = s.d; j < ld; ++j) ASSERT_EQ(inplace[i * ld + j], x[i * ld + j]);
      }
    }
  }
}

TEST_P(CpuOpsTest, AddRmsnormUpdatesResidualAndNormalises) {
  Random rng(22);
  const float eps = 1e-5f;
  for (const RowShape& s : kRowShapes) {
    const size_t n = static_cast<size_t>(s.m * s.d);
    std::vector<float> residual = rng.values(n, 2.0f);
    const std::vector<float> r0 = residual, x = rng.values(n, 2.0f);
    const std::vector<float> w =
        testing::rounded(rng.values(static_cast<size_t>(s.d)), DType::kBF16);
    testing::TypedBuffer wbuf(w, DType::kBF16);
    std::vector<float> y = testing::poisoned(n);
    std::vector<float> xc = x;
    backend_->add_rmsnorm(TensorView::contiguous(residual.data(), DType::kF32, {s.m, s.d}),
                          TensorView::contiguous(xc.data(), DType::kF32, {s.m, s.d}),
                          TensorView::contiguous(wbuf.data(), DType::kBF16, {s.d}), eps,
                          TensorView::contiguous(y.data(), DType::kF32, {s.m, s.d}));
    for (int64_t i = 0; i < s.m; ++i) {
      double ss = 0;
      for (int64_t j = 0; j < s.d; ++j) {
        const double r = static_cast<double>(r0[i * s.d + j]) + x[i * s.d + j];
        ASSERT_NEAR(residual[i * s.d + j], r, 1e-6 * std::fabs(r) + 1e-7);
        ss += r * r;
      }
      const double inv = 1.0 / std::sqrt(ss / s.d + eps);
      for (int64_t j = 0; j < s.d; ++j) {
        const double ref = (static_cast<double>(r0[i * s.d + j]) + x[i * s.d + j]) * inv * w[j];
        ASSERT_NEAR(y[i * s.d + j], ref, 2e-5 * std::fabs(ref) + 1e-6);
      }
    }
    EXPECT_EQ(xc, x) << "x must not change";
  }
}

struct RopeCase {
  RopeStyle style;
  int32_t rotary_dim;
  int64_t head_dim, heads, kv_heads, tokens;
};

TEST_P(CpuOpsTest, RopeRotatesPairsOfEachStyleAndLeavesTheRest) {
  Random rng(23);
  const RopeCase cases[] = {
      {RopeStyle::kNeox, 64, 64, 4, 2, 5},        {RopeStyle::kNeox, 32, 64, 3, 1, 7},
      {RopeStyle::kInterleaved, 64, 64, 4, 4, 3}, {RopeStyle::kInterleaved, 16, 40, 6, 2, 9},
      {RopeStyle::kNeox, 2, 6, 1, 1, 1},
  };
  const int32_t max_positions = 50;
  for (const RopeCase& c : cases) {
    const int32_t half = c.rotary_dim / 2;
    std::vector<float> cos_t(static_cast<size_t>(max_positions * half));
    std::vector<float> sin_t(cos_t.size());
    for (int32_t p = 0; p < max_positions; ++p) {
      for (int32_t i = 0; i < half; ++i) {
        const double angle = p * std::pow(10000.0, -2.0 * i / c.rotary_dim);
        cos_t[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
        sin_t[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
      }
    }
    RopeTable table{cos_t.data(), sin_t.data(), c.rotary_dim, max_positions, c.style};
    std::vector<int32_t> positions(static_cast<size_t>(c.tokens));
    for (int32_t& p : positions) p = rng.index(max_positions);
    // q and k are views into one fused qkv row, as the model produces them.
    const int64_t row = (c.heads + 2 * c.kv_heads) * c.head_dim;
    std::vector<float> qkv = rng.values(static_cast<size_t>(c.tokens * row));
    const std::vector<float> before = qkv;
    TensorView q = TensorView::contiguous(qkv.data(), DType::kF32, {c.tokens, c.heads, c.head_dim});
    q.strides[0] = row;
    TensorView k = TensorView::contiguous(qkv.data() + c.heads * c.head_dim, DType::kF32,
                                          {c.tokens, c.kv_heads, c.head_dim});
    k.strides[0] = row;
    backend_->rope(q, k, positions.data(), table);

    for (int64_t t = 0; t < c.tokens; ++t) {
      const int32_t p = positions[static_cast<size_t>(t)];
      for (int64_t h = 0; h < c.heads + 2 * c.kv_heads; ++h) {
        const float* in = before.data() + t * row + h * c.head_dim;
        const float* out = qkv.data() + t * row + h * c.head_dim;
        const bool rotated = h < c.heads + c.kv_heads;  // V is not touched
        for (int64_t i = 0; i < c.head_dim; ++i) {
          double ref = in[i];
          if (rotated && i < c.rotary_dim) {
            int64_t pair, f;
            bool first;
            if (c.style == RopeStyle::kNeox) {
              first = i < half;
              pair = first ? i + half : i - half;
              f = first ? i : i - half;
            } else {
              first = i % 2 == 0;
              pair = first ? i + 1 : i - 1;
              f = i / 2;
            }
            const double cs = cos_t[static_cast<size_t>(p * half + f)];
            const double sn = sin_t[static_cast<size_t>(p * half + f)];
            ref = first ? in[i] * cs - in[pair] * sn : in[i] * cs + in[pair] * sn;
          }
          ASSERT_NEAR(out[i], ref, 1e-6)
              << "token " << t << " head " << h << " elem " << i << " rotary " << c.rotary_dim;
        }
      }
    }
  }
}

TEST_P(CpuOpsTest, SiluMulReadsStridedGateAndUp) {
  Random rng(24);
  for (const RowShape& s : kRowShapes) {
    // gate and up are the two halves of one fused [m, 2f] gate_up output.
    std::vector<float> fused = rng.values(static_cast<size_t>(s.m * 2 * s.d), 6.0f);
    TensorView gate = strided(fused, s.m, s.d, 2 * s.d);
    TensorView up = gate;
    up.data = fused.data() + s.d;
    std::vector<float> out = testing::poisoned(static_cast<size_t>(s.m * s.d));
    backend_->silu_mul(gate, up, TensorView::contiguous(out.data(), DType::kF32, {s.m, s.d}));
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.d; ++j) {
        const double g = fused[i * 2 * s.d + j], u = fused[i * 2 * s.d + s.d + j];
        const double ref = g / (1.0 + std::exp(-g)) * u;
        ASSERT_NEAR(out[i * s.d + j], ref, 2e-6 * std::fabs(ref) + 1e-6);
      }
    }
  }
}

TEST_P(CpuOpsTest, EmbeddingConvertsRowsOfEveryDtype) {
  Random rng(25);
  const int64_t vocab = 37;
  for (int64_t d : {1, 16, 45, 896}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const std::vector<float> table =
          testing::rounded(rng.values(static_cast<size_t>(vocab * d)), dtype);
      testing::TypedBuffer buf(table, dtype);
      std::vector<int32_t> ids = {0, 36, 5, 5, 17, 1, 30};
      std::vector<float> out = testing::poisoned(ids.size() * static_cast<size_t>(d));
      const int64_t t = static_cast<int64_t>(ids.size());
      backend_->embedding(ids.data(), TensorView::contiguous(buf.data(), dtype, {vocab, d}),
                          TensorView::contiguous(out.data(), DType::kF32, {t, d}));
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < d; ++j) {
          ASSERT_EQ(out[i * d + j], table[ids[i] * d + j]) << dtype_name(dtype) << " d=" << d;
        }
      }
    }
  }
}

TEST_P(CpuOpsTest, GatherRowsCopiesSelectedRows) {
  Random rng(26);
  const int64_t rows = 9, d = 19;
  std::vector<float> src = rng.values(static_cast<size_t>(rows * d));
  const std::vector<int32_t> sel = {8, 0, 3, 3};
  std::vector<float> dst = testing::poisoned(sel.size() * d);
  backend_->gather_rows(
      TensorView::contiguous(src.data(), DType::kF32, {rows, d}), sel.data(),
      TensorView::contiguous(dst.data(), DType::kF32, {static_cast<int64_t>(sel.size()), d}));
  for (size_t r = 0; r < sel.size(); ++r) {
    for (int64_t j = 0; j < d; ++j) ASSERT_EQ(dst[r * d + j], src[sel[r] * d + j]);
  }
}

TEST_P(CpuOpsTest, SoftmaxRowsSumToOneAndMatchReference) {
  Random rng(27);
  for (const RowShape& s : kRowShapes) {
    const int64_t ld = s.d + 1;
    std::vector<float> x = rng.values(static_cast<size_t>(s.m * ld), 20.0f);
    const std::vector<float> x0 = x;
    backend_->softmax(strided(x, s.m, s.d, ld));
    for (int64_t i = 0; i < s.m; ++i) {
      double mx = -1e30, sum = 0;
      for (int64_t j = 0; j < s.d; ++j) mx = std::max(mx, static_cast<double>(x0[i * ld + j]));
      for (int64_t j = 0; j < s.d; ++j) sum += std::exp(x0[i * ld + j] - mx);
      for (int64_t j = 0; j < s.d; ++j) {
        const double ref = std::exp(x0[i * ld + j] - mx) / sum;
        ASSERT_NEAR(x[i * ld + j], ref, 2e-6 * ref + 1e-9);
      }
      ASSERT_EQ(x[i * ld + s.d], x0[i * ld + s.d]) << "the gap between rows was written";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CpuOpsTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

TEST(CpuBackendTest, AllocateAlignsAndCopies) {
  auto backend = testing::make_cpu_backend(CpuIsa::kAuto);
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->name(), "cpu");
  EXPECT_EQ(backend->device(), DeviceKind::kCpu);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, size_t{4095}, size_t{4096},
                       size_t{1} << 20, (size_t{1} << 20) + 3}) {
    auto p = backend->allocate(bytes);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    const size_t align = bytes >= 4096 ? 4096 : 64;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.value()) % align, 0u) << bytes << " bytes";
    std::vector<unsigned char> src(bytes), back(bytes);
    for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>(i * 7 + 1);
    backend->copy(p.value(), src.data(), bytes);
    backend->synchronize();
    backend->copy(back.data(), p.value(), bytes);
    EXPECT_EQ(back, src);
    backend->deallocate(p.value());
  }
  auto huge = backend->allocate(~size_t{0} - 10);
  ASSERT_FALSE(huge.is_ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kResourceExhausted);
}

TEST(CpuBackendTest, CreateRejectsBadOptions) {
  CpuBackendOptions options;
  options.num_threads = -1;
  auto r = CpuBackend::create(options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  options.num_threads = 0;
  options.gemm.gemv_max_m = kGemvMaxM + 1;
  EXPECT_EQ(CpuBackend::create(options).status().code(), StatusCode::kInvalidArgument);
  for (CpuIsa isa : testing::all_isas()) {
    CpuBackendOptions o;
    o.isa = isa;
    o.num_threads = 1;
    auto b = CpuBackend::create(o);
    EXPECT_EQ(b.is_ok(), cpu_supports_isa(isa)) << cpu_isa_name(isa);
    if (!b.is_ok()) {
      EXPECT_EQ(b.status().code(), StatusCode::kUnimplemented);
    }
  }
}

TEST(CpuBackendDeathTest, EmbeddingChecksIds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto backend = testing::make_cpu_backend(CpuIsa::kScalar, 1);
  ASSERT_NE(backend, nullptr);
  std::vector<float> table(4 * 3, 1.0f), out(3);
  const int32_t bad = 4;
  EXPECT_DEATH(backend->embedding(&bad, TensorView::contiguous(table.data(), DType::kF32, {4, 3}),
                                  TensorView::contiguous(out.data(), DType::kF32, {1, 3})),
               "outside the vocabulary");
}

}  // namespace
}  // namespace tierserve

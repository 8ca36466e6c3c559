// Every row kernel of every CPU path (scalar, AVX2, AVX-512) against double-precision references,
// over lengths that cover full vectors, tails and empty rows. Guard elements past the end of
// each output catch masked stores that write too far.
#include "kernels/cpu/cpu_kernels.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::kNaN;
using testing::Random;

constexpr int64_t kGuard = 19;
const std::vector<int64_t> kLengths = {0,  1,  2,  3,  7,  8,  9,   15,  16,  17,  31,
                                       32, 33, 40, 63, 64, 65, 100, 127, 128, 129, 1000};

class CpuKernelsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
    k_ = &cpu_kernels(GetParam());
    ASSERT_EQ(k_->isa, GetParam());
  }
  const CpuKernels* k_ = nullptr;
};

// Values of a guard region, which no kernel may change.
void expect_guard_intact(const std::vector<float>& v, int64_t n, float guard) {
  for (int64_t i = n; i < static_cast<int64_t>(v.size()); ++i) {
    ASSERT_EQ(std::memcmp(&v[static_cast<size_t>(i)], &guard, sizeof(float)), 0)
        << "element " << i << " past the end (" << n << ") was written";
  }
}

TEST_P(CpuKernelsTest, DotMatchesDoubleForEveryDtype) {
  Random rng(11);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t n : kLengths) {
      const std::vector<float> a = rng.values(static_cast<size_t>(n));
      const std::vector<float> b = testing::rounded(rng.values(static_cast<size_t>(n)), dtype);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += static_cast<double>(a[i]) * b[i];
        mag += std::fabs(static_cast<double>(a[i]) * b[i]);
      }
      float got;
      if (dtype == DType::kF32) {
        got = k_->dot_f32(a.data(), b.data(), n);
      } else {
        const std::vector<uint16_t> bits = testing::to_half(b, dtype);
        got = (dtype == DType::kBF16 ? k_->dot_bf16 : k_->dot_f16)(a.data(), bits.data(), n);
      }
      // f32 accumulation of n products: error below n * 2^-24 of the magnitude sum.
      EXPECT_NEAR(got, ref, 1e-6 + mag * static_cast<double>(n) * 6e-8)
          << dtype_name(dtype) << " n=" << n;
    }
  }
}

TEST_P(CpuKernelsTest, AxpyMatchesDoubleAndStopsAtTheEnd) {
  Random rng(12);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t n : kLengths) {
      const float alpha = rng.value();
      const std::vector<float> x = testing::rounded(rng.values(static_cast<size_t>(n)), dtype);
      std::vector<float> y = rng.values(static_cast<size_t>(n + kGuard));
      const std::vector<float> y0 = y;
      const float guard = y[static_cast<size_t>(n)];
      for (int64_t i = n; i < n + kGuard; ++i) y[static_cast<size_t>(i)] = guard;
      if (dtype == DType::kF32) {
        k_->axpy_f32(alpha, x.data(), y.data(), n);
      } else {
        const std::vector<uint16_t> bits = testing::to_half(x, dtype);
        (dtype == DType::kBF16 ? k_->axpy_bf16 : k_->axpy_f16)(alpha, bits.data(), y.data(), n);
      }
      for (int64_t i = 0; i < n; ++i) {
        const double ref = y0[i] + static_cast<double>(alpha) * x[i];
        ASSERT_NEAR(y[i], ref, 1e-6) << dtype_name(dtype) << " n=" << n << " i=" << i;
      }
      expect_guard_intact(y, n, guard);
    }
  }
}

TEST_P(CpuKernelsTest, RmsnormAndAddRmsnormMatchDouble) {
  Random rng(13);
  const float eps = 1e-5f;
  for (int64_t n : kLengths) {
    if (n == 0) continue;
    const std::vector<float> x = rng.values(static_cast<size_t>(n), 3.0f);
    const std::vector<float> w = rng.values(static_cast<size_t>(n));
    const std::vector<float> r0 = rng.values(static_cast<size_t>(n), 3.0f);
    std::vector<float> y = testing::poisoned(static_cast<size_t>(n + kGuard));
    k_->rmsnorm(x.data(), w.data(), eps, y.data(), n);
    std::vector<float> residual = r0;
    residual.resize(static_cast<size_t>(n + kGuard), kNaN);
    std::vector<float> y2 = testing::poisoned(static_cast<size_t>(n + kGuard));
    k_->add_rmsnorm(residual.data(), x.data(), w.data(), eps, y2.data(), n);

    double ss = 0, ss2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      ss += static_cast<double>(x[i]) * x[i];
      const double r = static_cast<double>(r0[i]) + x[i];
      ss2 += r * r;
    }
    const double inv = 1.0 / std::sqrt(ss / n + eps), inv2 = 1.0 / std::sqrt(ss2 / n + eps);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(y[i], x[i] * inv * w[i], 2e-5 * std::fabs(x[i] * inv) + 1e-6) << "n=" << n;
      const double r = static_cast<double>(r0[i]) + x[i];
      ASSERT_NEAR(residual[i], r, 1e-6 * std::fabs(r) + 1e-7) << "n=" << n;
      ASSERT_NEAR(y2[i], r * inv2 * w[i], 2e-5 * std::fabs(r * inv2) + 1e-6) << "n=" << n;
    }
    for (int64_t i = n; i < n + kGuard; ++i) {
      ASSERT_TRUE(std::isnan(y[i]) && std::isnan(y2[i]) && std::isnan(residual[i]))
          << "wrote past the end, n=" << n;
    }
    // In place (y aliases x).
    std::vector<float> inplace = x;
    k_->rmsnorm(inplace.data(), w.data(), eps, inplace.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(inplace[i], y[i]);
  }
}

TEST_P(CpuKernelsTest, SoftmaxMatchesDouble) {
  Random rng(14);
  for (int64_t n : kLengths) {
    if (n == 0) continue;
    for (float scale : {1.0f, 30.0f}) {
      std::vector<float> x = rng.values(static_cast<size_t>(n), scale);
      x.resize(static_cast<size_t>(n + kGuard), kNaN);
      const std::vector<float> x0 = x;
      k_->softmax(x.data(), n);
      double mx = x0[0], sum = 0;
      for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x0[i]));
      for (int64_t i = 0; i < n; ++i) sum += std::exp(x0[i] - mx);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double ref = std::exp(x0[i] - mx) / sum;
        ASSERT_NEAR(x[i], ref, 2e-6 * ref + 1e-9) << "n=" << n << " scale=" << scale;
        total += x[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
      for (int64_t i = n; i < n + kGuard; ++i) ASSERT_TRUE(std::isnan(x[i]));
    }
  }
}

TEST_P(CpuKernelsTest, SiluMulMatchesDoubleIncludingLargeInputs) {
  Random rng(15);
  for (int64_t n : kLengths) {
    std::vector<float> g = rng.values(static_cast<size_t>(n), 12.0f);
    if (n >= 4) {  // far outside exp's range in both directions
      g[0] = -100.0f;
      g[1] = 100.0f;
      g[2] = -88.5f;
      g[3] = 89.0f;
    }
    const std::vector<float> u = rng.values(static_cast<size_t>(n));
    std::vector<float> out = testing::poisoned(static_cast<size_t>(n + kGuard));
    k_->silu_mul(g.data(), u.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
      ASSERT_NEAR(out[i], ref, 2e-6 * std::fabs(ref) + 1e-6) << "n=" << n << " g=" << g[i];
    }
    for (int64_t i = n; i < n + kGuard; ++i) ASSERT_TRUE(std::isnan(out[i]));
  }
}

// The scalar path uses common/dtype.h; every other path must give the same bits.
TEST_P(CpuKernelsTest, ConversionsMatchCommonDtypeBitForBit) {
  Random rng(16);
  std::vector<float> v = rng.values(1003, 4.0f);
  for (int i = 0; i < 200; ++i) v[static_cast<size_t>(i)] *= std::ldexp(1.0f, (i % 60) - 30);
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f,
                            65504.0f,
                            65520.0f,
                            1e6f,
                            -1e6f,
                            5.96e-8f,
                            3e-8f,
                            1e-40f,
                            -1e-45f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            1.00390625f /* bf16 halfway, even */,
                            1.01171875f /* halfway, odd */,
                            3.4e38f};
  std::copy(std::begin(specials), std::end(specials), v.begin() + 300);
  for (size_t n : {size_t{0}, size_t{5}, size_t{16}, size_t{31}, v.size()}) {
    std::vector<uint16_t> bf(n + kGuard, 0xabcd), hf(n + kGuard, 0xabcd);
    k_->f32_to_bf16(v.data(), bf.data(), static_cast<int64_t>(n));
    k_->f32_to_f16(v.data(), hf.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(bf[i], f32_to_bf16(v[i])) << "bf16 of " << v[i];
      ASSERT_EQ(hf[i], f32_to_f16(v[i])) << "f16 of " << v[i];
    }
    for (size_t i = n; i < n + kGuard; ++i) ASSERT_EQ(bf[i], 0xabcd);
    for (size_t i = n; i < n + kGuard; ++i) ASSERT_EQ(hf[i], 0xabcd);

    std::vector<float> back = testing::poisoned(n + kGuard), back16 = testing::poisoned(n + kGuard);
    k_->bf16_to_f32(bf.data(), back.data(), static_cast<int64_t>(n));
    k_->f16_to_f32(hf.data(), back16.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) {
      const float b = bf16_to_f32(bf[i]), h = f16_to_f32(hf[i]);
      ASSERT_EQ(std::memcmp(&back[i], &b, 4), 0) << "bf16 bits " << bf[i];
      ASSERT_EQ(std::memcmp(&back16[i], &h, 4), 0) << "f16 bits " << hf[i];
    }
    for (size_t i = n; i < n + kGuard; ++i)
      ASSERT_TRUE(std::isnan(back[i]) && std::isnan(back16[i]));
  }
  // NaN stays NaN, also when its payload is only in the bits that bf16 drops (a plain rounding
  // would turn those into infinity). bf16 matches common/dtype.h bit for bit; f16 NaN payloads
  // may differ.
  for (uint32_t bits : {0x7fc00000u, 0x7f800001u, 0xff800100u, 0x7fffffffu}) {
    for (int64_t n : {1, 17}) {  // a tail element and a full vector
      float in[17];
      for (float& f : in) std::memcpy(&f, &bits, sizeof(f));
      uint16_t b[17], h[17];
      k_->f32_to_bf16(in, b, n);
      k_->f32_to_f16(in, h, n);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(b[i], f32_to_bf16(in[0])) << std::hex << bits;
        EXPECT_TRUE(std::isnan(f16_to_f32(h[i]))) << std::hex << bits;
      }
    }
  }
}

TEST_P(CpuKernelsTest, GemvMatchesDoubleForEveryDtypeAndRowCount) {
  Random rng(17);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int32_t m = 1; m <= kGemvMaxM; ++m) {
      for (int64_t k : {1, 15, 16, 17, 33, 64, 100}) {
        const int64_t n = 11, ldx = k + 3, ldy = n + 2;
        const std::vector<float> x = rng.values(static_cast<size_t>(m * ldx));
        const std::vector<float> w =
            testing::rounded(rng.values(static_cast<size_t>(n * k)), dtype);
        const std::vector<float> bias = rng.values(static_cast<size_t>(n));
        testing::TypedBuffer wbuf(w, dtype);
        std::vector<float> packed(static_cast<size_t>(m * gemv_x_stride(k)), kNaN);
        (dtype == DType::kBF16 ? k_->pack_gemv_x_bf16 : k_->pack_gemv_x)(x.data(), ldx, m, k,
                                                                         packed.data());
        std::vector<float> y = testing::poisoned(static_cast<size_t>(m * ldy));
        GemvArgs args{packed.data(), m, k, wbuf.data(), bias.data(), y.data(), ldy};
        const GemvFn fn = dtype == DType::kF32    ? k_->gemv_f32
                          : dtype == DType::kBF16 ? k_->gemv_bf16
                                                  : k_->gemv_f16;
        // Two ranges, the first not a multiple of 4 rows, as the pool may split them.
        fn(args, 0, 6);
        fn(args, 6, n);
        for (int32_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < n; ++r) {
            double ref = bias[r], mag = std::fabs(bias[r]);
            for (int64_t j = 0; j < k; ++j) {
              ref += static_cast<double>(x[i * ldx + j]) * w[r * k + j];
              mag += std::fabs(static_cast<double>(x[i * ldx + j]) * w[r * k + j]);
            }
            ASSERT_NEAR(y[i * ldy + r], ref, 1e-6 + mag * 1e-5)
                << dtype_name(dtype) << " m=" << m << " k=" << k << " row " << r;
          }
          for (int64_t r = n; r < ldy; ++r) ASSERT_TRUE(std::isnan(y[i * ldy + r]));
        }
      }
    }
  }
}

// y[i, :] depends only on x[i, :]: the same bits whatever else is in the batch (DESIGN.md
// invariant 1 for decode batches of up to kGemvMaxM rows).
TEST_P(CpuKernelsTest, GemvRowsAreBatchInvariant) {
  Random rng(18);
  const int64_t n = 9, k = 203;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const std::vector<float> x = rng.values(static_cast<size_t>(kGemvMaxM * k));
    testing::TypedBuffer wbuf(testing::rounded(rng.values(static_cast<size_t>(n * k)), dtype),
                              dtype);
    const PackGemvXFn pack = dtype == DType::kBF16 ? k_->pack_gemv_x_bf16 : k_->pack_gemv_x;
    const GemvFn fn = dtype == DType::kF32    ? k_->gemv_f32
                      : dtype == DType::kBF16 ? k_->gemv_bf16
                                              : k_->gemv_f16;
    std::vector<float> packed(static_cast<size_t>(kGemvMaxM * gemv_x_stride(k)));
    std::vector<float> batch = testing::poisoned(static_cast<size_t>(kGemvMaxM * n));
    pack(x.data(), k, kGemvMaxM, k, packed.data());
    fn(GemvArgs{packed.data(), kGemvMaxM, k, wbuf.data(), nullptr, batch.data(), n}, 0, n);
    for (int32_t m = 1; m <= kGemvMaxM; ++m) {
      for (int32_t first = 0; first + m <= kGemvMaxM; ++first) {
        std::vector<float> part = testing::poisoned(static_cast<size_t>(m * n));
        pack(x.data() + first * k, k, m, k, packed.data());
        fn(GemvArgs{packed.data(), m, k, wbuf.data(), nullptr, part.data(), n}, 0, n);
        ASSERT_EQ(std::memcmp(part.data(), batch.data() + first * n, part.size() * sizeof(float)),
                  0)
            << dtype_name(dtype) << ": rows " << first << ".." << first + m - 1;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CpuKernelsTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

TEST(CpuIsaTest, NamesRoundTripAndResolve) {
  for (CpuIsa isa : {CpuIsa::kAuto, CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    CpuIsa parsed;
    ASSERT_TRUE(parse_cpu_isa(cpu_isa_name(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  CpuIsa parsed;
  EXPECT_FALSE(parse_cpu_isa("sse2", &parsed));
  EXPECT_TRUE(cpu_supports_isa(CpuIsa::kScalar));
  const CpuIsa best = resolve_cpu_isa(CpuIsa::kAuto);
  EXPECT_NE(best, CpuIsa::kAuto);
  EXPECT_TRUE(cpu_supports_isa(best));
  EXPECT_EQ(resolve_cpu_isa(CpuIsa::kScalar), CpuIsa::kScalar);
  // AVX-512 implies AVX2 here.
  if (cpu_supports_isa(CpuIsa::kAvx512)) {
    EXPECT_TRUE(cpu_supports_isa(CpuIsa::kAvx2));
  }
}

}  // namespace
}  // namespace tierserve

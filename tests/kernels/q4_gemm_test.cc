// Q4 (W4A16) weights: the AWQ and GPTQ unpackers against packings written here from the formats'
// definitions, and the fused gemm of every kernel path and route (Q4 GEMV, batch-invariant
// groups, dequantized panels for oneDNN) against dequantize-then-matmul in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "common/dtype.h"
#include "common/thread_pool.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/q4_weight.h"
#include "tests/kernels/quantized_gemm_util.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::Random;

// A random 4-bit weight in natural order: q, scales (f16, ~0.01-0.1) and zeros (0..16); or in
// the k-quant form, 6-bit scales and mins under f16 d (~1e-3) and dmin (~1e-3).
Q4Source random_source(int64_t n, int64_t k, int32_t group_size, bool act_order, bool k_quant,
                       Random& rng) {
  Q4Source s;
  s.n = n;
  s.k = k;
  s.group_size = group_size;
  const int64_t groups = k / group_size;
  for (int64_t i = 0; i < n * k; ++i) s.q.push_back(static_cast<uint8_t>(rng.index(16)));
  for (int64_t i = 0; i < n * groups; ++i) {
    if (k_quant) {
      s.sub_scale.push_back(static_cast<uint8_t>(rng.index(64)));
      s.zero.push_back(static_cast<uint8_t>(rng.index(64)));
    } else {
      s.scale.push_back(f32_to_f16(std::fabs(rng.value(0.1f))));
      s.zero.push_back(static_cast<uint8_t>(rng.index(17)));
    }
  }
  if (k_quant) {
    for (int64_t i = 0; i < n * groups / 4; ++i) {
      s.supers.push_back(f32_to_f16(std::fabs(rng.value(2e-3f))));
    }
  }
  if (act_order) {
    s.perm.resize(static_cast<size_t>(k));
    std::iota(s.perm.begin(), s.perm.end(), 0);
    std::shuffle(s.perm.begin(), s.perm.end(), rng.engine());
  }
  return s;
}

TEST(Q4WeightTest, UnpacksAwqGemmLayout) {
  Random rng(1);
  const int64_t n = 16, k = 64;
  const int32_t g = 32;
  const Q4Source want = random_source(n, k, g, false, false, rng);
  // AutoAWQ: output 8j + order[i] in nibble i; qweight [k, n/8], qzeros [k/g, n/8], scales
  // [k/g, n].
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  std::vector<int32_t> qweight(static_cast<size_t>(k * n / 8)),
      qzeros(static_cast<size_t>(k / g * n / 8));
  std::vector<uint16_t> scales(static_cast<size_t>(k / g * n));
  std::vector<uint8_t> zero_lt16 = want.zero;
  for (uint8_t& z : zero_lt16) z = static_cast<uint8_t>(z % 16);  // AWQ zeros are 4-bit
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t j = 0; j < n / 8; ++j) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= uint32_t{want.q[(8 * j + order[i]) * k + c]} << (4 * i);
      qweight[c * (n / 8) + j] = static_cast<int32_t>(word);
    }
  }
  for (int64_t gi = 0; gi < k / g; ++gi) {
    for (int64_t j = 0; j < n / 8; ++j) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) {
        word |= uint32_t{zero_lt16[(8 * j + order[i]) * (k / g) + gi]} << (4 * i);
      }
      qzeros[gi * (n / 8) + j] = static_cast<int32_t>(word);
    }
    for (int64_t r = 0; r < n; ++r) scales[gi * n + r] = want.scale[r * (k / g) + gi];
  }
  auto got = unpack_awq(qweight.data(), qzeros.data(), scales.data(), n, k, g, "w");
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got.value().q, want.q);
  EXPECT_EQ(got.value().zero, zero_lt16);
  EXPECT_EQ(got.value().scale, want.scale);
  EXPECT_TRUE(got.value().perm.empty());

  auto bad = unpack_awq(qweight.data(), qzeros.data(), scales.data(), 12, k, g, "layer.q_proj");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("layer.q_proj"), std::string::npos);
}

TEST(Q4WeightTest, UnpacksGptqWithActOrder) {
  Random rng(2);
  const int64_t n = 8, k = 64;
  const int32_t g = 32;
  // Natural (input) order q; g_idx assigns inputs to groups in a shuffled way, group_size each.
  std::vector<uint8_t> q(static_cast<size_t>(n * k));
  for (uint8_t& v : q) v = static_cast<uint8_t>(rng.index(16));
  std::vector<int32_t> g_idx(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) g_idx[c] = static_cast<int32_t>(c % 2);  // even: 0, odd: 1
  std::vector<uint8_t> zero(static_cast<size_t>(n * 2));
  std::vector<uint16_t> scale(zero.size());
  for (size_t i = 0; i < zero.size(); ++i) {
    zero[i] = static_cast<uint8_t>(1 + rng.index(16));  // stored as zero - 1
    scale[i] = f32_to_f16(0.05f * static_cast<float>(i + 1));
  }
  std::vector<int32_t> qweight(static_cast<size_t>(k / 8 * n)),
      qzeros(static_cast<size_t>(2 * n / 8));
  std::vector<uint16_t> scales(static_cast<size_t>(2 * n));
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t r = 0; r < n; ++r) {
      qweight[(c / 8) * n + r] |= static_cast<int32_t>(uint32_t{q[r * k + c]} << (4 * (c % 8)));
    }
  }
  for (int64_t gi = 0; gi < 2; ++gi) {
    for (int64_t r = 0; r < n; ++r) {
      qzeros[gi * (n / 8) + r / 8] |=
          static_cast<int32_t>(uint32_t(zero[r * 2 + gi] - 1) << (4 * (r % 8)));
      scales[gi * n + r] = scale[r * 2 + gi];
    }
  }
  auto got =
      unpack_gptq(qweight.data(), qzeros.data(), scales.data(), g_idx.data(), n, k, g, 1, "w");
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  const Q4Source& s = got.value();
  ASSERT_EQ(s.perm.size(), static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) {
    const int32_t input = s.perm[c];
    EXPECT_EQ(g_idx[input], c / g) << "stored column " << c;
    for (int64_t r = 0; r < n; ++r) ASSERT_EQ(s.q[r * k + c], q[r * k + input]);
  }
  EXPECT_EQ(s.zero, zero);
  // The dequantized blob puts every value back at its input column.
  auto layout = Q4Layout::make(n, k, g, true);
  ASSERT_TRUE(layout.is_ok());
  std::vector<uint8_t> blob(layout.value().bytes);
  pack_q4(s, layout.value(), blob.data());
  const std::vector<float> w = dequantize_q4(blob.data(), layout.value());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const float want = static_cast<float>(q[r * k + c] - zero[r * 2 + g_idx[c]]) *
                         f16_to_f32(scale[r * 2 + g_idx[c]]);
      ASSERT_EQ(w[r * k + c], want) << r << ", " << c;
    }
  }
  std::vector<int32_t> uneven = g_idx;
  uneven[1] = 0;  // group 0 now has 33 inputs
  EXPECT_FALSE(
      unpack_gptq(qweight.data(), qzeros.data(), scales.data(), uneven.data(), n, k, g, 1, "w")
          .is_ok());
}

struct Q4Case {
  int64_t m, n, k;
  int32_t group_size;
  bool act_order, bias, k_quant;
};

const Q4Case kQ4Cases[] = {
    {1, 64, 128, 32, false, false, false}, {1, 256, 512, 128, false, true, false},
    {3, 40, 256, 64, true, true, false},   {4, 96, 128, 128, true, false, false},
    {6, 72, 256, 32, false, true, false},  {37, 130, 384, 128, true, true, false},
    {1, 24, 256, 32, false, false, true},  {5, 40, 512, 32, false, true, true},
    {37, 66, 768, 32, false, true, true},
};

// The k-quant form takes exactly what GGUF's Q4_K has: groups of 32, whole super-blocks.
TEST(Q4WeightTest, KQuantLayoutHasQ4KShape) {
  auto layout = Q4Layout::make(8, 512, 32, false, true);
  ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
  const Q4Layout& l = layout.value();
  EXPECT_EQ(l.scales_offset, 8u * 256);
  EXPECT_EQ(l.zeros_offset, l.scales_offset + 8 * 16);
  EXPECT_EQ(l.supers_offset, l.zeros_offset + 8 * 16);  // 128 bytes: already aligned
  EXPECT_EQ(l.bytes, l.supers_offset + 64);             // 8 rows x 2 blocks x (d, dmin)
  for (const auto& [k, g, act] :
       {std::tuple{512, 64, false}, std::tuple{288, 32, false}, std::tuple{512, 32, true}}) {
    auto bad = Q4Layout::make(8, k, g, act, true);
    ASSERT_FALSE(bad.is_ok()) << k << " " << g;
    EXPECT_NE(bad.status().message().find("k-quant"), std::string::npos)
        << bad.status().to_string();
  }
}

// A k-quant blob dequantizes as llama.cpp's dequantize_row_q4_K: d * scale and dmin * min as f32
// products, then (d * scale) * q - dmin * min.
TEST(Q4WeightTest, KQuantDequantizesAsLlamaCpp) {
  Random rng(5);
  const int64_t n = 3, k = 512;
  const Q4Source s = random_source(n, k, 32, false, true, rng);
  const Q4Layout l = Q4Layout::make(n, k, 32, false, true).value();
  std::vector<uint8_t> blob(l.bytes);
  pack_q4(s, l, blob.data());
  const std::vector<float> w = dequantize_q4(blob.data(), l);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t g = r * (k / 32) + c / 32;
      const float d1 = f16_to_f32(s.supers[2 * (g / 8)]) * static_cast<float>(s.sub_scale[g]);
      const float m1 = f16_to_f32(s.supers[2 * (g / 8) + 1]) * static_cast<float>(s.zero[g]);
      const float prod = d1 * static_cast<float>(s.q[r * k + c]);
      ASSERT_EQ(w[r * k + c], prod - m1) << r << ", " << c;
    }
  }
}

class Q4GemmTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
  }
};

// Every route (default, batch-invariant, panels for every m > 0) against dequantize-then-matmul
// in double; m = 1 rows of the batch-invariant route bitwise equal to the same row alone.
TEST_P(Q4GemmTest, FusedGemmMatchesDequantizeThenMatmul) {
  ThreadPool pool(3, nullptr);
  const CpuKernels& kernels = cpu_kernels(GetParam());
  Random rng(7);
  for (const Q4Case& c : kQ4Cases) {
    SCOPED_TRACE(::testing::Message()
                 << c.m << "x" << c.n << "x" << c.k << " g" << c.group_size
                 << (c.act_order ? " act-order" : "") << (c.k_quant ? " k-quant" : ""));
    const Q4Source src = random_source(c.n, c.k, c.group_size, c.act_order, c.k_quant, rng);
    auto layout = Q4Layout::make(c.n, c.k, c.group_size, c.act_order, c.k_quant);
    ASSERT_TRUE(layout.is_ok());
    std::vector<uint8_t> blob(layout.value().bytes);
    pack_q4(src, layout.value(), blob.data());
    const std::vector<float> w = dequantize_q4(blob.data(), layout.value());
    testing::expect_gemm_routes_match_dense(&pool, kernels, q4_view(blob.data(), layout.value()), w,
                                            c.m, c.n, c.k, c.bias, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, Q4GemmTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

}  // namespace
}  // namespace tierserve

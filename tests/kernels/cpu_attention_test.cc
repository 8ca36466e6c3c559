// write_kv and paged_attention on every kernel path and KV dtype, against a naive attention over
// contiguous K/V computed in double. Blocks are assigned from a shuffled pool, unused cache
// memory and outputs start as NaN, and batches mix decode, prefill and chunked prefill of
// sequences of different lengths, with grouped-query heads and sliding windows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace tierserve {
namespace {

using testing::Random;

struct SeqSpec {
  int32_t cached;      // tokens already in the cache before the step
  int32_t new_tokens;  // tokens the step adds (its queries)
};

struct AttnCase {
  std::string name;
  DType dtype;
  int32_t num_layers, block_size, num_kv_heads, head_dim, num_heads;
  int32_t window;  // AttentionParams::sliding_window
  int32_t layer;   // the layer attended
  std::vector<SeqSpec> seqs;
};

const AttnCase kCases[] = {
    {"decode_batch", DType::kF32, 2, 16, 2, 64, 4, 0, 1, {{20, 1}, {0, 1}, {47, 1}, {15, 1}}},
    {"prefill_chunked_mixed",
     DType::kBF16,
     3,
     4,
     2,
     40,
     6,
     0,
     0,
     {{0, 9}, {13, 5}, {30, 1}, {0, 1}, {7, 16}}},
    {"sliding_window", DType::kF16, 2, 8, 1, 32, 3, 5, 1, {{0, 12}, {20, 3}, {40, 1}, {2, 2}}},
    {"window_longer_than_context", DType::kBF16, 1, 16, 2, 16, 2, 100, 0, {{30, 2}, {0, 7}}},
    {"mha_head_dim_128", DType::kF32, 3, 16, 4, 128, 4, 0, 2, {{0, 33}, {100, 2}}},
    {"gqa_8_to_1_f16", DType::kF16, 1, 16, 1, 64, 8, 0, 0, {{60, 4}, {0, 1}}},
};

uint16_t poison_bits(DType dtype) { return dtype == DType::kBF16 ? 0x7fc0 : 0x7e00; }

// A cache filled through write_kv, with the data it should hold, for one case.
class KvFixture {
 public:
  KvFixture(const AttnCase& c, Random& rng) : c_(c) {
    layout_.num_layers = c.num_layers;
    layout_.block_size = c.block_size;
    layout_.num_kv_heads = c.num_kv_heads;
    layout_.head_dim = c.head_dim;
    layout_.dtype = c.dtype;
    const int32_t num_seqs = static_cast<int32_t>(c.seqs.size());
    int32_t needed = 0;
    for (const SeqSpec& s : c.seqs) {
      max_blocks_ = std::max(max_blocks_, blocks_for(s.cached + s.new_tokens) + 1);
      needed += blocks_for(s.cached + s.new_tokens);
    }
    num_blocks_ = needed + 5;  // spare blocks that nothing may touch
    const size_t elems = static_cast<size_t>(num_blocks_ * layout_.block_elems());
    if (c.dtype == DType::kF32) {
      f32_.assign(elems, testing::kNaN);
    } else {
      half_.assign(elems, poison_bits(c.dtype));
    }
    cache_.base = c.dtype == DType::kF32 ? static_cast<void*>(f32_.data()) : half_.data();
    cache_.layout = layout_;
    cache_.num_blocks = num_blocks_;

    // Physical blocks from a shuffled pool; unused table entries hold an invalid id.
    std::vector<int32_t> pool(static_cast<size_t>(num_blocks_));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng.engine());
    tables_.assign(static_cast<size_t>(num_seqs * max_blocks_), -1000);
    size_t next = 0;
    for (int32_t s = 0; s < num_seqs; ++s) {
      const SeqSpec& spec = c.seqs[static_cast<size_t>(s)];
      for (int32_t b = 0; b < blocks_for(spec.cached + spec.new_tokens); ++b) {
        tables_[static_cast<size_t>(s * max_blocks_ + b)] = pool[next++];
      }
    }
    // K and V of every layer, sequence and position, rounded to the cache dtype.
    const int64_t token_elems = layout_.token_elems();
    for (int32_t l = 0; l < c.num_layers; ++l) {
      for (const SeqSpec& s : c.seqs) {
        const size_t n = static_cast<size_t>((s.cached + s.new_tokens) * token_elems);
        k_.push_back(testing::rounded(rng.values(n), c.dtype));
        v_.push_back(testing::rounded(rng.values(n), c.dtype));
      }
    }
  }

  int32_t blocks_for(int32_t tokens) const { return (tokens + c_.block_size - 1) / c_.block_size; }
  const std::vector<float>& k(int32_t layer, int32_t s) const {
    return k_[static_cast<size_t>(layer) * c_.seqs.size() + static_cast<size_t>(s)];
  }
  const std::vector<float>& v(int32_t layer, int32_t s) const {
    return v_[static_cast<size_t>(layer) * c_.seqs.size() + static_cast<size_t>(s)];
  }
  int32_t block_of(int32_t s, int32_t pos) const {
    return tables_[static_cast<size_t>(s * max_blocks_ + pos / c_.block_size)];
  }

  // Metadata of a step in which sequence s adds positions [first[s], last[s]).
  struct Step {
    std::vector<int32_t> query_start, seq_lens, slot_mapping;
    AttentionMetadata meta;
  };
  Step make_step(bool prefix) const {
    Step st;
    st.query_start.push_back(0);
    for (size_t s = 0; s < c_.seqs.size(); ++s) {
      const SeqSpec& spec = c_.seqs[s];
      const int32_t first = prefix ? 0 : spec.cached;
      const int32_t last = prefix ? spec.cached : spec.cached + spec.new_tokens;
      for (int32_t p = first; p < last; ++p) {
        st.slot_mapping.push_back(block_of(static_cast<int32_t>(s), p) * c_.block_size +
                                  p % c_.block_size);
      }
      st.query_start.push_back(st.query_start.back() + (last - first));
      st.seq_lens.push_back(last);
    }
    st.meta.num_seqs = static_cast<int32_t>(c_.seqs.size());
    st.meta.num_tokens = st.query_start.back();
    st.meta.query_start = st.query_start.data();
    st.meta.seq_lens = st.seq_lens.data();
    st.meta.block_tables = tables_.data();
    st.meta.max_blocks_per_seq = max_blocks_;
    st.meta.slot_mapping = st.slot_mapping.data();
    return st;
  }

  // Writes the K/V of the step's tokens for every layer. k and v are strided views into one
  // [tokens, 2, kv_heads, head_dim] buffer, as a fused projection produces them.
  void write(Backend& backend, const Step& st, bool prefix) {
    const int64_t te = layout_.token_elems(), t = st.meta.num_tokens;
    for (int32_t l = 0; l < c_.num_layers; ++l) {
      std::vector<float> kv(static_cast<size_t>(t * 2 * te));
      int64_t row = 0;
      for (size_t s = 0; s < c_.seqs.size(); ++s) {
        const SeqSpec& spec = c_.seqs[s];
        const int32_t first = prefix ? 0 : spec.cached;
        const int32_t last = prefix ? spec.cached : spec.cached + spec.new_tokens;
        for (int32_t p = first; p < last; ++p, ++row) {
          std::memcpy(&kv[static_cast<size_t>(row * 2 * te)],
                      &k(l, static_cast<int32_t>(s))[p * te],
                      static_cast<size_t>(te) * sizeof(float));
          std::memcpy(&kv[static_cast<size_t>(row * 2 * te + te)],
                      &v(l, static_cast<int32_t>(s))[p * te],
                      static_cast<size_t>(te) * sizeof(float));
        }
      }
      TensorView kview =
          TensorView::contiguous(kv.data(), DType::kF32, {t, c_.num_kv_heads, c_.head_dim});
      kview.strides[0] = 2 * te;
      TensorView vview = kview;
      vview.data = kv.data() + te;
      backend.write_kv(l, kview, vview, st.meta, cache_);
    }
  }

  // The stored element at an independently computed address, as f32; `kv` 0 = K, 1 = V.
  float stored(int32_t block, int32_t layer, int kv, int32_t off, int64_t h, int64_t d) const {
    const int64_t per_kv = static_cast<int64_t>(c_.block_size) * c_.num_kv_heads * c_.head_dim;
    const int64_t i = block * layout_.block_elems() + layer * 2 * per_kv + kv * per_kv +
                      (off * c_.num_kv_heads + h) * c_.head_dim + d;
    if (c_.dtype == DType::kF32) return f32_[static_cast<size_t>(i)];
    const uint16_t b = half_[static_cast<size_t>(i)];
    return c_.dtype == DType::kBF16 ? bf16_to_f32(b) : f16_to_f32(b);
  }
  bool is_poison(int64_t i) const {
    return c_.dtype == DType::kF32 ? std::isnan(f32_[static_cast<size_t>(i)])
                                   : half_[static_cast<size_t>(i)] == poison_bits(c_.dtype);
  }

  const KvCacheView& cache() const { return cache_; }
  int32_t num_blocks() const { return num_blocks_; }
  const KvBlockLayout& layout() const { return layout_; }

 private:
  const AttnCase& c_;
  KvBlockLayout layout_;
  KvCacheView cache_;
  int32_t num_blocks_ = 0, max_blocks_ = 0;
  std::vector<float> f32_;
  std::vector<uint16_t> half_;
  std::vector<int32_t> tables_;
  std::vector<std::vector<float>> k_, v_;  // [layer * num_seqs + s][pos][kv_head][head_dim]
};

// Naive attention of one query row over contiguous K/V, in double.
std::vector<double> reference_attention(const float* q, const std::vector<float>& k,
                                        const std::vector<float>& v, int64_t p, int32_t window,
                                        int64_t kv_head, int64_t kv_heads, int64_t hd,
                                        double scale) {
  const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
  std::vector<double> scores;
  double mx = -1e300;
  for (int64_t j = lo; j <= p; ++j) {
    double s = 0;
    for (int64_t d = 0; d < hd; ++d)
      s += q[d] * static_cast<double>(k[(j * kv_heads + kv_head) * hd + d]);
    scores.push_back(s * scale);
    mx = std::max(mx, scores.back());
  }
  double sum = 0;
  for (double& s : scores) sum += (s = std::exp(s - mx));
  std::vector<double> out(static_cast<size_t>(hd), 0.0);
  for (int64_t j = lo; j <= p; ++j) {
    const double w = scores[static_cast<size_t>(j - lo)] / sum;
    for (int64_t d = 0; d < hd; ++d) out[d] += w * v[(j * kv_heads + kv_head) * hd + d];
  }
  return out;
}

class CpuAttentionTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_supports_isa(GetParam())) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(GetParam());
    backend_ = testing::make_cpu_backend(GetParam(), 3);
    ASSERT_NE(backend_, nullptr);
  }
  std::unique_ptr<CpuBackend> backend_;
};

TEST_P(CpuAttentionTest, WriteKvStoresEveryTokenAtItsSlotAndNothingElse) {
  Random rng(41);
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(c.name);
    KvFixture fx(c, rng);
    fx.write(*backend_, fx.make_step(true), true);
    fx.write(*backend_, fx.make_step(false), false);
    std::vector<bool> written(static_cast<size_t>(fx.num_blocks() * c.block_size), false);
    for (int32_t s = 0; s < static_cast<int32_t>(c.seqs.size()); ++s) {
      const SeqSpec& spec = c.seqs[static_cast<size_t>(s)];
      for (int32_t p = 0; p < spec.cached + spec.new_tokens; ++p) {
        const int32_t block = fx.block_of(s, p), off = p % c.block_size;
        written[static_cast<size_t>(block * c.block_size + off)] = true;
        for (int32_t l = 0; l < c.num_layers; ++l) {
          for (int64_t h = 0; h < c.num_kv_heads; ++h) {
            for (int64_t d = 0; d < c.head_dim; ++d) {
              const int64_t i = (p * c.num_kv_heads + h) * c.head_dim + d;
              ASSERT_EQ(fx.stored(block, l, 0, off, h, d), fx.k(l, s)[i])
                  << "K seq " << s << " pos " << p;
              ASSERT_EQ(fx.stored(block, l, 1, off, h, d), fx.v(l, s)[i])
                  << "V seq " << s << " pos " << p;
            }
          }
        }
      }
    }
    // Slots no token maps to still hold the poison in every layer.
    const KvBlockLayout& l = fx.layout();
    for (int32_t b = 0; b < fx.num_blocks(); ++b) {
      for (int32_t off = 0; off < c.block_size; ++off) {
        if (written[static_cast<size_t>(b * c.block_size + off)]) continue;
        for (int32_t layer = 0; layer < c.num_layers; ++layer) {
          for (int kv = 0; kv < 2; ++kv) {
            const int64_t base = b * l.block_elems() + l.offset(layer, kv, off);
            for (int64_t e = 0; e < l.token_elems(); ++e) {
              ASSERT_TRUE(fx.is_poison(base + e))
                  << "stray write in block " << b << " slot " << off;
            }
          }
        }
      }
    }
  }
}

TEST_P(CpuAttentionTest, MatchesNaiveAttentionOverContiguousKv) {
  Random rng(42);
  for (const AttnCase& c : kCases) {
    SCOPED_TRACE(c.name);
    KvFixture fx(c, rng);
    fx.write(*backend_, fx.make_step(true), true);
    const KvFixture::Step st = fx.make_step(false);
    fx.write(*backend_, st, false);

    const int64_t t = st.meta.num_tokens, nh = c.num_heads, hd = c.head_dim;
    std::vector<float> q = rng.values(static_cast<size_t>(t * nh * hd));
    std::vector<float> out = testing::poisoned(q.size());
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    params.sliding_window = c.window;
    backend_->paged_attention(c.layer, TensorView::contiguous(q.data(), DType::kF32, {t, nh, hd}),
                              st.meta, fx.cache(), params,
                              TensorView::contiguous(out.data(), DType::kF32, {t, nh, hd}));

    const int64_t group = nh / c.num_kv_heads;
    for (int32_t s = 0; s < static_cast<int32_t>(c.seqs.size()); ++s) {
      const SeqSpec& spec = c.seqs[static_cast<size_t>(s)];
      for (int32_t j = 0; j < spec.new_tokens; ++j) {
        const int64_t token = st.query_start[static_cast<size_t>(s)] + j;
        const int64_t p = spec.cached + j;
        for (int64_t h = 0; h < nh; ++h) {
          const std::vector<double> ref =
              reference_attention(&q[(token * nh + h) * hd], fx.k(c.layer, s), fx.v(c.layer, s), p,
                                  c.window, h / group, c.num_kv_heads, hd, params.scale);
          for (int64_t d = 0; d < hd; ++d) {
            ASSERT_NEAR(out[(token * nh + h) * hd + d], ref[static_cast<size_t>(d)], 3e-5)
                << "seq " << s << " query " << j << " head " << h << " elem " << d;
          }
        }
      }
    }
  }
}

// A sequence's output does not depend on what else is in the batch (DESIGN.md invariant 1).
TEST_P(CpuAttentionTest, OutputIsIndependentOfTheBatch) {
  Random rng(43);
  const AttnCase& c = kCases[1];
  KvFixture fx(c, rng);
  fx.write(*backend_, fx.make_step(true), true);
  const KvFixture::Step st = fx.make_step(false);
  fx.write(*backend_, st, false);
  const int64_t t = st.meta.num_tokens, nh = c.num_heads, hd = c.head_dim;
  std::vector<float> q = rng.values(static_cast<size_t>(t * nh * hd));
  std::vector<float> out = testing::poisoned(q.size());
  AttentionParams params;
  params.scale = 0.125f;
  backend_->paged_attention(c.layer, TensorView::contiguous(q.data(), DType::kF32, {t, nh, hd}),
                            st.meta, fx.cache(), params,
                            TensorView::contiguous(out.data(), DType::kF32, {t, nh, hd}));
  // Sequence 1 alone: its own query_start, seq_len and block-table row.
  const int32_t s = 1;
  const int32_t first = st.query_start[s], count = st.query_start[s + 1] - first;
  const int32_t qs[2] = {0, count};
  AttentionMetadata one = st.meta;
  one.num_seqs = 1;
  one.num_tokens = count;
  one.query_start = qs;
  one.seq_lens = &st.seq_lens[s];
  one.block_tables = st.meta.block_tables + s * st.meta.max_blocks_per_seq;
  one.slot_mapping = &st.slot_mapping[static_cast<size_t>(first)];
  std::vector<float> alone = testing::poisoned(static_cast<size_t>(count * nh * hd));
  backend_->paged_attention(c.layer,
                            TensorView::contiguous(&q[static_cast<size_t>(first * nh * hd)],
                                                   DType::kF32, {count, nh, hd}),
                            one, fx.cache(), params,
                            TensorView::contiguous(alone.data(), DType::kF32, {count, nh, hd}));
  EXPECT_EQ(std::memcmp(alone.data(), &out[static_cast<size_t>(first * nh * hd)],
                        alone.size() * sizeof(float)),
            0);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CpuAttentionTest, ::testing::ValuesIn(testing::all_isas()),
                         testing::isa_param_name);

}  // namespace
}  // namespace tierserve

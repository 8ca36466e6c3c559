#include "kernels/cpu/cpu_attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/op_checks.h"

namespace tierserve {
namespace {

void check_cache(int32_t layer, const KvCacheView& cache) {
  const KvBlockLayout& l = cache.layout;
  TS_CHECK(cache.base != nullptr && cache.num_blocks > 0 && l.block_size > 0 &&
           l.num_kv_heads > 0 && l.head_dim > 0 && l.num_layers > 0)
      << "KV cache view: " << cache.num_blocks << " blocks of " << l.block_size << " tokens, "
      << l.num_layers << " layers, " << l.num_kv_heads << " KV heads of " << l.head_dim;
  TS_CHECK(is_float_dtype(l.dtype)) << "KV cache dtype " << dtype_name(l.dtype);
  TS_CHECK(layer >= 0 && layer < l.num_layers) << "layer " << layer << " of " << l.num_layers;
}

// Checks the step's sequences against the query tensor and the cache, and returns the longest
// context any query token can see.
int64_t check_metadata(const AttentionMetadata& meta, int64_t num_tokens, const KvCacheView& cache,
                       int32_t sliding_window) {
  TS_CHECK(meta.num_seqs >= 0 && meta.num_tokens == num_tokens)
      << "metadata has " << meta.num_seqs << " sequences and " << meta.num_tokens
      << " tokens; the query has " << num_tokens;
  if (meta.num_seqs == 0) {
    TS_CHECK_EQ(num_tokens, 0) << "tokens without sequences";
    return 0;
  }
  TS_CHECK(meta.query_start != nullptr && meta.seq_lens != nullptr && meta.block_tables != nullptr)
      << "null metadata array";
  TS_CHECK(meta.query_start[0] == 0 && meta.query_start[meta.num_seqs] == num_tokens)
      << "query_start must run from 0 to " << num_tokens;
  const int64_t capacity = static_cast<int64_t>(meta.max_blocks_per_seq) * cache.layout.block_size;
  int64_t longest = 0;
  for (int32_t s = 0; s < meta.num_seqs; ++s) {
    const int64_t q_len = meta.query_start[s + 1] - meta.query_start[s];
    const int64_t len = meta.seq_lens[s];
    TS_CHECK(q_len >= 0 && len >= q_len && len <= capacity)
        << "sequence " << s << ": " << q_len << " query tokens, " << len << " cached, room for "
        << capacity;
    if (q_len > 0)
      longest =
          std::max(longest, sliding_window > 0 ? std::min<int64_t>(len, sliding_window) : len);
  }
  return longest;
}

// Sequence owning step token t: the last s with query_start[s] <= t.
int32_t sequence_of(const AttentionMetadata& meta, int64_t t) {
  int32_t lo = 0, hi = meta.num_seqs - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (meta.query_start[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Everything one (token, head) item needs, resolved once per call.
template <typename T>
struct AttendArgs {
  const AttentionMetadata* meta;
  const KvCacheView* cache;
  int32_t layer;
  const TensorView* q;
  const TensorView* out;
  int64_t num_heads, group, head_dim;
  float scale;
  int32_t window;
  const float* alibi;  // [num_heads] slopes or null
  float* scores;       // [slots, scores_stride]
  int64_t scores_stride;
  float (*dot)(const float*, const T*, int64_t);
  void (*axpy)(float, const T*, float*, int64_t);
  void (*softmax)(float*, int64_t);
};

// Calls fn(key_index, key_or_value_row) for every key position in [lo, hi] of sequence s,
// walking its block table. `kv` selects K (0) or V (1).
template <typename T, typename Fn>
void for_each_key(const AttendArgs<T>& a, int32_t s, int64_t kv_head, int kv, int64_t lo,
                  int64_t hi, const Fn& fn) {
  const KvBlockLayout& l = a.cache->layout;
  const int32_t* table =
      a.meta->block_tables + static_cast<int64_t>(s) * a.meta->max_blocks_per_seq;
  const int64_t token_elems = l.token_elems();
  for (int64_t pos = lo; pos <= hi;) {
    const int64_t b = pos / l.block_size;
    const int32_t block = table[b];
    TS_CHECK(block >= 0 && block < a.cache->num_blocks)
        << "sequence " << s << " block " << b << " is " << block << " of " << a.cache->num_blocks;
    const int64_t first = pos % l.block_size;
    const int64_t last = std::min<int64_t>(l.block_size - 1, first + (hi - pos));
    const T* row = static_cast<const T*>(a.cache->block_ptr(block)) +
                   l.offset(a.layer, kv, static_cast<int32_t>(first)) + kv_head * a.head_dim;
    for (int64_t i = first; i <= last; ++i, row += token_elems) fn(pos - lo + (i - first), row);
    pos += last - first + 1;
  }
}

template <typename T>
void attend(const AttendArgs<T>& a, int slot, int64_t item) {
  const int64_t t = item / a.num_heads, h = item % a.num_heads;
  const int32_t s = sequence_of(*a.meta, t);
  const int64_t q_len = a.meta->query_start[s + 1] - a.meta->query_start[s];
  const int64_t p = a.meta->seq_lens[s] - q_len + (t - a.meta->query_start[s]);
  const int64_t lo = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1) : 0;
  const int64_t kv_head = h / a.group;
  const float* q = static_cast<const float*>(a.q->data) + t * a.q->stride(0) + h * a.q->stride(1);
  float* o = static_cast<float*>(a.out->data) + t * a.out->stride(0) + h * a.out->stride(1);
  float* scores = a.scores + slot * a.scores_stride;

  for_each_key(a, s, kv_head, 0, lo, p,
               [&](int64_t j, const T* k) { scores[j] = a.dot(q, k, a.head_dim) * a.scale; });
  if (a.alibi != nullptr) {
    const float slope = a.alibi[h];
    for (int64_t j = 0; j <= p - lo; ++j) scores[j] += slope * static_cast<float>(lo + j - p);
  }
  a.softmax(scores, p - lo + 1);
  std::memset(o, 0, static_cast<size_t>(a.head_dim) * sizeof(float));
  for_each_key(a, s, kv_head, 1, lo, p,
               [&](int64_t j, const T* v) { a.axpy(scores[j], v, o, a.head_dim); });
}

}  // namespace

void CpuAttention::write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                            const AttentionMetadata& meta, const KvCacheView& cache) {
  check_cache(layer, cache);
  const KvBlockLayout& l = cache.layout;
  for (const TensorView* t : {&k, &v}) {
    check_rows(*t, DType::kF32, 3, "write_kv k/v");
    TS_CHECK(t->dim(0) == meta.num_tokens && t->dim(1) == l.num_kv_heads && t->dim(2) == l.head_dim)
        << "write_kv of " << describe(*t) << " for " << meta.num_tokens << " tokens, "
        << l.num_kv_heads << " KV heads of " << l.head_dim;
  }
  if (meta.num_tokens == 0) return;
  TS_CHECK(meta.slot_mapping != nullptr) << "write_kv without a slot mapping";

  struct Work {
    const TensorView* src[2];
    const AttentionMetadata* meta;
    const KvCacheView* cache;
    int32_t layer;
    const CpuKernels* kernels;
  } work{{&k, &v}, &meta, &cache, layer, kernels_};
  const int64_t grain = std::max<int64_t>(1, 8192 / l.token_elems());
  pool_->parallel_for(meta.num_tokens, grain, [&work](int64_t begin, int64_t end) {
    const KvCacheView& c = *work.cache;
    const KvBlockLayout& l = c.layout;
    const int64_t slots = static_cast<int64_t>(c.num_blocks) * l.block_size;
    const size_t esize = dtype_size(l.dtype);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = work.meta->slot_mapping[t];
      TS_CHECK(slot >= 0 && slot < slots) << "token " << t << " slot " << slot << " of " << slots;
      char* block = static_cast<char*>(c.block_ptr(static_cast<int32_t>(slot / l.block_size)));
      for (int kv = 0; kv < 2; ++kv) {
        const TensorView& src = *work.src[kv];
        char* dst = block + static_cast<size_t>(l.offset(
                                work.layer, kv, static_cast<int32_t>(slot % l.block_size))) *
                                esize;
        for (int64_t h = 0; h < l.num_kv_heads; ++h) {
          const float* row = src.ptr<const float>() + t * src.stride(0) + h * src.stride(1);
          void* out = dst + static_cast<size_t>(h * l.head_dim) * esize;
          switch (l.dtype) {
            case DType::kBF16:
              work.kernels->f32_to_bf16(row, static_cast<uint16_t*>(out), l.head_dim);
              break;
            case DType::kF16:
              work.kernels->f32_to_f16(row, static_cast<uint16_t*>(out), l.head_dim);
              break;
            default:
              std::memcpy(out, row, static_cast<size_t>(l.head_dim) * sizeof(float));
              break;
          }
        }
      }
    }
  });
}

void CpuAttention::paged_attention(int32_t layer, const TensorView& q,
                                   const AttentionMetadata& meta, const KvCacheView& cache,
                                   const AttentionParams& params, const TensorView& out) {
  check_cache(layer, cache);
  const KvBlockLayout& l = cache.layout;
  check_rows(q, DType::kF32, 3, "paged_attention q");
  check_rows(out, DType::kF32, 3, "paged_attention out");
  const int64_t num_tokens = q.dim(0), num_heads = q.dim(1);
  TS_CHECK(q.dim(2) == l.head_dim && num_heads % l.num_kv_heads == 0 && num_heads > 0)
      << "paged_attention q " << describe(q) << " for " << l.num_kv_heads << " KV heads of "
      << l.head_dim;
  TS_CHECK(out.dim(0) == num_tokens && out.dim(1) == num_heads && out.dim(2) == l.head_dim)
      << "paged_attention out " << describe(out) << " for q " << describe(q);
  TS_CHECK(params.sliding_window >= 0) << "sliding window " << params.sliding_window;
  const int64_t longest = check_metadata(meta, num_tokens, cache, params.sliding_window);
  if (num_tokens == 0) return;

  const int64_t stride = (longest + 15) / 16 * 16;
  float* scores = scores_.get<float>(static_cast<size_t>(pool_->num_threads() * stride));
  const int64_t items = num_tokens * num_heads;
  auto run = [&](auto args) {
    parallel_slots(*pool_, items, 1, [&args](int slot, int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) attend(args, slot, item);
    });
  };
  const int64_t group = num_heads / l.num_kv_heads;
  switch (l.dtype) {
    case DType::kBF16:
    case DType::kF16: {
      const bool bf16 = l.dtype == DType::kBF16;
      run(AttendArgs<uint16_t>{&meta, &cache, layer, &q, &out, num_heads, group, l.head_dim,
                               params.scale, params.sliding_window, params.alibi_slopes, scores,
                               stride, bf16 ? kernels_->dot_bf16 : kernels_->dot_f16,
                               bf16 ? kernels_->axpy_bf16 : kernels_->axpy_f16, kernels_->softmax});
      break;
    }
    default:
      run(AttendArgs<float>{&meta, &cache, layer, &q, &out, num_heads, group, l.head_dim,
                            params.scale, params.sliding_window, params.alibi_slopes, scores,
                            stride, kernels_->dot_f32, kernels_->axpy_f32, kernels_->softmax});
      break;
  }
}

}  // namespace tierserve

// Paged attention on CUDA (contract in cuda_ops.h), for decode and for prefill over a cached
// prefix alike. Work is split three ways: query token, group of query heads that share one KV
// head (so each K/V row is read once for the group), and a split of kAttentionSplitKeys keys.
// A split block:
//   1. loads its heads' queries into shared memory and, one warp per key, the dot products with
//      every key of its split (lanes across head_dim), scaled, into shared scores;
//   2. per head, the split's max and the sum of exp(score - max);
//   3. per head and element of head_dim, the exp-weighted sum of V;
// and writes (max, sum, weighted V) to scratch. The merge kernel then combines a token's splits
// in split order, the online-softmax rule: M = max m_s, L = sum l_s e^(m_s - M),
// out = sum acc_s e^(m_s - M) / L. The split size is fixed, so a token's result depends only on
// its own query and keys, never on the batch (DESIGN.md §6 invariant 1).
#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kSplit = kAttentionSplitKeys;
constexpr int kMaxHeadDim = 512;
constexpr int kMaxHeadsPerBlock = 8;

// Sequence owning step token t: the last s with query_start[s] <= t.
__device__ int32_t sequence_of(const int32_t* query_start, int32_t num_seqs, int32_t t) {
  int32_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (query_start[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Scratch of one (token, head): [max_splits] maxima, [max_splits] sums, [max_splits][head_dim]
// weighted V.
struct SplitScratch {
  float* m;
  float* l;
  float* acc;
};

__device__ SplitScratch scratch_of(float* scratch, int64_t local_token, int32_t head,
                                   int32_t num_heads, int32_t head_dim, int32_t max_splits) {
  const int64_t per_head = static_cast<int64_t>(max_splits) * (head_dim + 2);
  float* base = scratch + (local_token * num_heads + head) * per_head;
  return {base, base + max_splits, base + 2 * max_splits};
}

template <typename T, int kHeads>
__global__ void __launch_bounds__(kThreads)
    split_kernel(AttentionArgs a, KvCacheArgs cache, int32_t token_begin, int32_t max_splits,
                 float* scratch, DeviceErrors* errors) {
  // The int64 array first, so that it is 8-byte aligned whatever head_dim is.
  extern __shared__ int64_t smem[];
  int64_t* key_off = smem;                                  // [kSplit]
  float* q_s = reinterpret_cast<float*>(key_off + kSplit);  // [kHeads][head_dim]
  float* scores = q_s + kHeads * cache.head_dim;            // [kHeads][kSplit]
  __shared__ float red[32];

  const int32_t local = blockIdx.x;
  const int32_t t = token_begin + local;
  const int32_t head0 = blockIdx.y * kHeads;
  const int32_t split = blockIdx.z;
  const int32_t hd = cache.head_dim;
  const int32_t group = a.num_heads / cache.num_kv_heads;
  const int32_t kv_head = head0 / group;

  const int32_t s = sequence_of(a.query_start, a.num_seqs, t);
  const int32_t q_len = a.query_start[s + 1] - a.query_start[s];
  const int32_t p = a.seq_lens[s] - q_len + (t - a.query_start[s]);
  const int32_t lo = a.window > 0 ? max(0, p - a.window + 1) : 0;
  const int32_t k0 = lo + split * kSplit;
  const int32_t n = k0 > p ? 0 : min(kSplit, p - k0 + 1);

  if (n == 0) {  // past this token's context: an empty split
    for (int h = threadIdx.x; h < kHeads; h += blockDim.x) {
      SplitScratch out = scratch_of(scratch, local, head0 + h, a.num_heads, hd, max_splits);
      out.m[split] = -INFINITY;
      out.l[split] = 0.0f;
    }
    return;
  }

  for (int e = threadIdx.x; e < kHeads * hd; e += blockDim.x) {
    const int h = e / hd, i = e % hd;
    q_s[e] = a.q[static_cast<int64_t>(t) * a.q_s0 + static_cast<int64_t>(head0 + h) * a.q_s1 + i];
  }
  __syncthreads();

  // 1. Scores, one warp per key.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  const int64_t token_elems = static_cast<int64_t>(cache.num_kv_heads) * hd;
  for (int j = warp; j < n; j += kWarps) {
    const int32_t pos = k0 + j;
    // A position past the block table's row (a context longer than the table, which the host
    // checks only for eager steps) reads as block -2: reported, never the next row.
    const int32_t index = pos / cache.block_size;
    const int32_t block = index < a.max_blocks_per_seq ? table[index] : -2;
    int64_t off = -1;
    if (block == -1) {
      // A padding row of a captured batch: no key.
    } else if (block < 0 || block >= cache.num_blocks) {
      if (lane == 0) report(errors, DeviceError::kBlock, t, block, cache.num_blocks);
    } else {
      off = static_cast<int64_t>(block) * (cache.block_bytes / static_cast<int64_t>(sizeof(T))) +
            a.layer * cache.layer_elems + (pos % cache.block_size) * token_elems +
            kv_head * static_cast<int64_t>(hd);
    }
    float dot[kHeads];
#pragma unroll
    for (int h = 0; h < kHeads; ++h) dot[h] = 0.0f;
    if (off >= 0) {
      const T* k = reinterpret_cast<const T*>(cache.base) + off;
      for (int i = lane; i < hd; i += 32) {
        const float kv = to_f32(k[i]);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) dot[h] += q_s[h * hd + i] * kv;
      }
    }
#pragma unroll
    for (int h = 0; h < kHeads; ++h) dot[h] = warp_sum(dot[h]);
    if (lane == 0) {
      key_off[j] = off;
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float bias =
            a.alibi != nullptr ? a.alibi[head0 + h] * static_cast<float>(pos - p) : 0.0f;
        scores[h * kSplit + j] = off >= 0 ? dot[h] * a.scale + bias : -INFINITY;
      }
    }
  }
  __syncthreads();

  // 2. Per head: max, then exp and sum.
  float m_h[kHeads], l_h[kHeads];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, scores[h * kSplit + j]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const float e = mx == -INFINITY ? 0.0f : expf(scores[h * kSplit + j] - mx);
      scores[h * kSplit + j] = e;
      sum += e;
    }
    sum = block_sum(sum, red);
    m_h[h] = mx;
    l_h[h] = sum;
  }
  __syncthreads();

  // 3. Weighted V, threads across head_dim.
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc[kHeads];
#pragma unroll
    for (int h = 0; h < kHeads; ++h) acc[h] = 0.0f;
    for (int j = 0; j < n; ++j) {
      const int64_t off = key_off[j];
      if (off < 0) continue;
      const float v = to_f32(reinterpret_cast<const T*>(cache.base)[off + cache.kv_elems + i]);
#pragma unroll
      for (int h = 0; h < kHeads; ++h) acc[h] += scores[h * kSplit + j] * v;
    }
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      SplitScratch out = scratch_of(scratch, local, head0 + h, a.num_heads, hd, max_splits);
      out.acc[static_cast<int64_t>(split) * hd + i] = acc[h];
    }
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      SplitScratch out = scratch_of(scratch, local, head0 + h, a.num_heads, hd, max_splits);
      out.m[split] = m_h[h];
      out.l[split] = l_h[h];
    }
  }
}

// One block per (token, head): merges the splits in order.
__global__ void __launch_bounds__(kThreads)
    merge_kernel(AttentionArgs a, int32_t head_dim, int32_t token_begin, int32_t max_splits,
                 const float* scratch) {
  const int32_t local = blockIdx.x;
  const int32_t t = token_begin + local;
  const int32_t head = blockIdx.y;
  const SplitScratch in =
      scratch_of(const_cast<float*>(scratch), local, head, a.num_heads, head_dim, max_splits);
  float mx = -INFINITY;
  for (int32_t s = 0; s < max_splits; ++s) mx = fmaxf(mx, in.m[s]);
  float total = 0.0f;
  for (int32_t s = 0; s < max_splits; ++s) {
    if (in.l[s] > 0.0f) total += in.l[s] * expf(in.m[s] - mx);
  }
  float* out = a.out + static_cast<int64_t>(t) * a.o_s0 + static_cast<int64_t>(head) * a.o_s1;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    float acc = 0.0f;
    for (int32_t s = 0; s < max_splits; ++s) {
      if (in.l[s] > 0.0f)
        acc += in.acc[static_cast<int64_t>(s) * head_dim + i] * expf(in.m[s] - mx);
    }
    out[i] = total > 0.0f ? acc / total : 0.0f;
  }
}

template <typename T, int kHeads>
cudaError_t launch_split(const AttentionArgs& a, const KvCacheArgs& cache, int32_t token_begin,
                         int32_t tokens, int32_t max_splits, float* scratch, DeviceErrors* errors,
                         cudaStream_t stream) {
  const size_t smem =
      (static_cast<size_t>(kHeads) * cache.head_dim + static_cast<size_t>(kHeads) * kSplit) *
          sizeof(float) +
      kSplit * sizeof(int64_t);
  auto kernel = split_kernel<T, kHeads>;
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(a.num_heads / kHeads),
                  static_cast<unsigned>(max_splits));
  kernel<<<grid, kThreads, smem, stream>>>(a, cache, token_begin, max_splits, scratch, errors);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const AttentionArgs& a, const KvCacheArgs& cache, int32_t token_begin,
                         int32_t tokens, int32_t max_splits, float* scratch, DeviceErrors* errors,
                         cudaStream_t stream) {
  // The most query heads per block that divide the group (heads of a block share a KV head).
  const int32_t group = a.num_heads / cache.num_kv_heads;
  int heads = kMaxHeadsPerBlock;
  while (group % heads != 0) heads /= 2;
  switch (heads) {
    case 8:
      return launch_split<T, 8>(a, cache, token_begin, tokens, max_splits, scratch, errors, stream);
    case 4:
      return launch_split<T, 4>(a, cache, token_begin, tokens, max_splits, scratch, errors, stream);
    case 2:
      return launch_split<T, 2>(a, cache, token_begin, tokens, max_splits, scratch, errors, stream);
    default:
      return launch_split<T, 1>(a, cache, token_begin, tokens, max_splits, scratch, errors, stream);
  }
}

}  // namespace

int64_t attention_scratch_floats(int32_t num_heads, int32_t head_dim, int32_t max_splits) {
  return static_cast<int64_t>(num_heads) * max_splits * (head_dim + 2);
}

cudaError_t launch_paged_attention(const AttentionArgs& args, const KvCacheArgs& cache,
                                   int32_t token_begin, int32_t token_end, int32_t max_splits,
                                   float* scratch, DeviceErrors* errors, cudaStream_t stream) {
  const int32_t tokens = token_end - token_begin;
  if (tokens <= 0) return cudaSuccess;
  if (cache.head_dim > kMaxHeadDim || max_splits < 1) return cudaErrorInvalidValue;
  cudaError_t e = cudaSuccess;
  switch (cache.type) {
    case ElemType::kBF16:
      e = launch_typed<__nv_bfloat16>(args, cache, token_begin, tokens, max_splits, scratch, errors,
                                      stream);
      break;
    case ElemType::kF16:
      e = launch_typed<__half>(args, cache, token_begin, tokens, max_splits, scratch, errors,
                               stream);
      break;
    default:
      e = launch_typed<float>(args, cache, token_begin, tokens, max_splits, scratch, errors,
                              stream);
      break;
  }
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(args.num_heads));
  merge_kernel<<<grid, kThreads, 0, stream>>>(args, cache.head_dim, token_begin, max_splits,
                                              scratch);
  return cudaGetLastError();
}

}  // namespace tierserve::cuda

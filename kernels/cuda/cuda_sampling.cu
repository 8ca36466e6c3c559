// Sampling on the device (contract in cuda_ops.h; semantics of choose_token, kernels/sampling.h):
// CUB's segmented radix sort orders each row's logits descending, ties keeping the lower id
// first (the sort is stable over ids in ascending order); one block per row then softmaxes the
// top-k at the temperature in double, cuts top-p and min-p, and draws.
#include <cub/cub.cuh>

#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kThreads = 1024;
using Scan = cub::BlockScan<double, kThreads>;
using Reduce = cub::BlockReduce<double, kThreads>;

__global__ void iota_rows_kernel(int32_t* ids, int64_t vocab, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ids[i] = static_cast<int32_t>(i % vocab);
  }
}

__global__ void segment_offsets_kernel(const DeviceSampleRow* rows, int32_t num_rows, int64_t vocab,
                                       int32_t* begin, int32_t* end) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= num_rows) return;
  begin[i] = static_cast<int32_t>(rows[i].row * vocab);
  end[i] = static_cast<int32_t>(rows[i].row * vocab + vocab);
}

// exp(key * inv_t - max) as the host computes it: the product and the difference each rounded
// in f32 (no fused multiply-add), the exponential in double. (Sums still run in another order
// than the host's loops, and device exp may differ by an ulp: draws match up to rounding.)
__device__ __forceinline__ double weight(float key, float inv_t, float max) {
  return exp(static_cast<double>(__fsub_rn(__fmul_rn(key, inv_t), max)));
}

// The first index i in [0, n) where pred(cumulative sum of w over [0, i]) holds, or n.
template <typename W, typename Pred>
__device__ int32_t first_cumulative(int32_t n, const W& w, const Pred& pred,
                                    typename Scan::TempStorage& scan, int32_t* found) {
  if (threadIdx.x == 0) *found = n;
  __syncthreads();
  double carry = 0.0;
  for (int32_t base = 0; base < n; base += kThreads) {
    const int32_t i = base + static_cast<int32_t>(threadIdx.x);
    const double x = i < n ? w(i) : 0.0;
    double cum = 0.0, total = 0.0;
    Scan(scan).InclusiveSum(x, cum, total);
    cum += carry;
    if (i < n && pred(cum)) atomicMin(found, i);
    carry += total;
    __syncthreads();
    if (*found < n) break;
  }
  __syncthreads();
  return *found;
}

__global__ void __launch_bounds__(kThreads)
    select_kernel(const float* keys, const int32_t* ids, const DeviceSampleRow* rows, int64_t vocab,
                  int32_t* out) {
  __shared__ typename Scan::TempStorage scan;
  __shared__ typename Reduce::TempStorage reduce;
  __shared__ double shared_sum;
  __shared__ int32_t found;
  const DeviceSampleRow p = rows[blockIdx.x];
  const float* key = keys + p.row * vocab;
  const int32_t* id = ids + p.row * vocab;
  const int32_t n = static_cast<int32_t>(vocab);
  const int32_t k = p.top_k > 0 && p.top_k < n ? p.top_k : n;
  const float max = __fmul_rn(key[0], p.inv_t);

  // The softmax's denominator over the top-k.
  double part = 0.0;
  for (int32_t i = threadIdx.x; i < k; i += kThreads) part += weight(key[i], p.inv_t, max);
  const double sum = Reduce(reduce).Sum(part);
  if (threadIdx.x == 0) shared_sum = sum;
  __syncthreads();
  const double total = shared_sum;
  auto prob = [&](int32_t i) { return weight(key[i], p.inv_t, max) / total; };

  // top-p: the smallest prefix whose mass reaches top_p.
  int32_t keep = k;
  if (p.top_p < 1.0) {
    const int32_t i = first_cumulative(
        k, prob, [&](double c) { return c >= p.top_p; }, scan, &found);
    if (i < k) keep = i + 1;
  }
  // min-p: the candidates at least min_p x the first (probabilities only fall along the order).
  if (p.min_p > 0.0) {
    const double floor = p.min_p * prob(0);
    __syncthreads();  // every thread has read `found` from the top-p search
    if (threadIdx.x == 0) found = keep;
    __syncthreads();
    for (int32_t i = 1 + threadIdx.x; i < keep; i += kThreads) {
      if (prob(i) < floor) atomicMin(&found, i);
    }
    __syncthreads();
    keep = found;
    __syncthreads();
  }
  // The draw: the first candidate whose cumulative probability exceeds uniform x the kept mass.
  part = 0.0;
  for (int32_t i = threadIdx.x; i < keep; i += kThreads) part += prob(i);
  const double mass = Reduce(reduce).Sum(part);
  if (threadIdx.x == 0) shared_sum = mass;
  __syncthreads();
  const double u = p.uniform * shared_sum;
  const int32_t pick = first_cumulative(
      keep, prob, [&](double c) { return c > u; }, scan, &found);
  if (threadIdx.x == 0) out[blockIdx.x] = id[pick < keep ? pick : keep - 1];
}

__global__ void penalties_kernel(float* logits, int64_t vocab, const PenaltyRow* rows,
                                 const PenaltyToken* tokens) {
  const PenaltyRow r = rows[blockIdx.x];
  float* row = logits + r.row * vocab;
  // Each token appears once per row: no two threads touch the same logit.
  for (int32_t i = r.begin + static_cast<int32_t>(threadIdx.x); i < r.end; i += blockDim.x) {
    const PenaltyToken t = tokens[i];
    if (t.token < 0 || t.token >= vocab) continue;
    float l = row[t.token];
    if (r.repetition != 1.0f && t.seen) l = l > 0.0f ? l / r.repetition : l * r.repetition;
    // Rounded as the host rounds it: no fused multiply-add.
    if (t.count > 0) {
      l = __fsub_rn(l, __fadd_rn(__fmul_rn(r.frequency, static_cast<float>(t.count)), r.presence));
    }
    if (t.suppress) l = -INFINITY;
    row[t.token] = l;
  }
}

}  // namespace

cudaError_t launch_apply_penalties(float* logits, int64_t vocab, const PenaltyRow* rows,
                                   int32_t num_rows, const PenaltyToken* tokens,
                                   cudaStream_t stream) {
  if (num_rows == 0) return cudaSuccess;
  penalties_kernel<<<static_cast<unsigned>(num_rows), 256, 0, stream>>>(logits, vocab, rows,
                                                                        tokens);
  return cudaGetLastError();
}

cudaError_t sampling_workspace(int32_t max_rows, int64_t vocab, size_t* sort_bytes) {
  const int64_t items = static_cast<int64_t>(max_rows) * vocab;
  return cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, *sort_bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), items, max_rows,
      static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(nullptr));
}

cudaError_t launch_fill_ids(int32_t* ids, int32_t max_rows, int64_t vocab, cudaStream_t stream) {
  iota_rows_kernel<<<1024, 256, 0, stream>>>(ids, vocab, static_cast<int64_t>(max_rows) * vocab);
  return cudaGetLastError();
}

cudaError_t launch_sample_rows(const float* logits, int32_t logit_rows, int64_t vocab,
                               const DeviceSampleRow* rows, int32_t num_rows,
                               const SamplingBuffers& b, int32_t* out, cudaStream_t stream) {
  if (num_rows == 0) return cudaSuccess;
  segment_offsets_kernel<<<(num_rows + 127) / 128, 128, 0, stream>>>(rows, num_rows, vocab, b.begin,
                                                                     b.end);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  size_t bytes = b.sort_bytes;
  e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      b.sort_temp, bytes, logits, b.keys, b.ids_in, b.ids, static_cast<int64_t>(logit_rows) * vocab,
      num_rows, b.begin, b.end, 0, static_cast<int>(sizeof(float) * 8), stream);
  if (e != cudaSuccess) return e;
  select_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(b.keys, b.ids, rows,
                                                                          vocab, out);
  return cudaGetLastError();
}

}  // namespace tierserve::cuda

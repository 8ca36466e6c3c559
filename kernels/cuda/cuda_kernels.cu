// Row-wise and element-wise kernels of the CUDA backend (contracts in cuda_ops.h). Each follows
// the CPU reference's arithmetic (kernels/cpu/kernels_scalar.cc) in f32; reductions run in a
// fixed order for a given row length, never depending on the batch.
#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kRowThreads = 256;   // threads per block of the row kernels
constexpr int kElemThreads = 256;  // threads per block of the element kernels

unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

// One block per row.
__global__ void rmsnorm_kernel(const float* x, int64_t x_stride, float* residual, int64_t r_stride,
                               const float* add, int64_t add_stride, const void* w, ElemType w_type,
                               float eps, float* y, int64_t y_stride, int64_t d) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* src = x + r * x_stride;
  float ss = 0.0f;
  if (residual != nullptr) {
    float* res = residual + r * r_stride;
    const float* a = add + r * add_stride;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const float v = res[i] + a[i];
      res[i] = v;
      ss += v * v;
    }
    src = res;
  } else {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += src[i] * src[i];
  }
  ss = block_sum(ss, shared);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  float* out = y + r * y_stride;
  // Each thread rewrites only the elements it read, so y may alias x or add.
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    out[i] = src[i] * inv * load_elem(w, i, w_type);
  }
}

__global__ void rope_kernel(float* q, int64_t q_s0, int64_t q_s1, int64_t hq, float* k,
                            int64_t k_s0, int64_t k_s1, int64_t hk, const int32_t* positions,
                            RopeArgs args, DeviceErrors* errors) {
  const int64_t t = blockIdx.x;
  const int32_t pos = positions[t];
  if (pos < 0 || pos >= args.max_positions) {
    if (threadIdx.x == 0) report(errors, DeviceError::kPosition, t, pos, args.max_positions);
    return;
  }
  const int64_t pairs = (hq + hk) * args.half;
  for (int64_t item = threadIdx.x; item < pairs; item += blockDim.x) {
    const int64_t h = item / args.half;
    const int i = static_cast<int>(item % args.half);
    float* v = h < hq ? q + t * q_s0 + h * q_s1 : k + t * k_s0 + (h - hq) * k_s1;
    const float angle = static_cast<float>(pos) * args.inv_freq[i];
    const float c = cosf(angle), s = sinf(angle);
    const int a = args.neox ? i : 2 * i;
    const int b = args.neox ? i + args.half : 2 * i + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x1 * c + x0 * s;
  }
}

__global__ void silu_mul_kernel(const float* gate, int64_t g_stride, const float* up,
                                int64_t u_stride, float* out, int64_t o_stride, int64_t f) {
  const int64_t r = blockIdx.x;
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < f;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const float g = gate[r * g_stride + i];
    out[r * o_stride + i] = g / (1.0f + expf(-g)) * up[r * u_stride + i];
  }
}

__global__ void embedding_kernel(const int32_t* ids, const void* table, ElemType type,
                                 int64_t table_stride, int64_t vocab, float* out, int64_t o_stride,
                                 int64_t d, DeviceErrors* errors) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  float* dst = out + t * o_stride;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) report(errors, DeviceError::kTokenId, t, id, vocab);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const int64_t base = static_cast<int64_t>(id) * table_stride;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) dst[i] = load_elem(table, base + i, type);
}

__global__ void gather_rows_kernel(const float* src, int64_t s_stride, int64_t src_rows,
                                   const int32_t* rows, float* dst, int64_t d_stride, int64_t d,
                                   DeviceErrors* errors) {
  const int64_t r = blockIdx.x;
  const int32_t row = rows[r];
  float* to = dst + r * d_stride;
  if (row < 0 || row >= src_rows) {
    if (threadIdx.x == 0) report(errors, DeviceError::kRow, r, row, src_rows);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) to[i] = 0.0f;
    return;
  }
  const float* from = src + row * s_stride;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) to[i] = from[i];
}

__global__ void softmax_kernel(float* x, int64_t stride, int64_t n) {
  __shared__ float shared[32];
  float* row = x + blockIdx.x * stride;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, row[i]);
  mx = block_max(mx, shared);
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(row[i] - mx);
    row[i] = e;
    sum += e;
  }
  sum = block_sum(sum, shared);
  const float inv = 1.0f / sum;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}

template <typename T>
__global__ void convert_rows_kernel(const float* src, int64_t src_stride, T* dst, int64_t k) {
  const int64_t r = blockIdx.x;
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    dst[r * k + i] = from_f32<T>(src[r * src_stride + i]);
  }
}

// One block per row: the row's largest finite magnitude, its power-of-two scale, the row.
__global__ void convert_rows_f16_scaled_kernel(const float* src, int64_t src_stride, __half* dst,
                                               float* scale, int64_t k) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* row = src + r * src_stride;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = fabsf(row[i]);
    if (isfinite(v)) amax = fmaxf(amax, v);  // inf and NaN stay as they are
  }
  amax = block_max(amax, shared);
  // s = 2^e with amax / kF16SafeMagnitude = f * 2^e, f in [0.5, 1): amax / s < the safe
  // magnitude. frexpf and ldexpf are exact, so dividing by s and multiplying back are too.
  int e = 0;
  frexpf(amax / kF16SafeMagnitude, &e);
  const float s = amax > kF16SafeMagnitude ? ldexpf(1.0f, e) : 1.0f;
  const float inv = 1.0f / s;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    dst[r * k + i] = __float2half_rn(row[i] * inv);
  }
  if (threadIdx.x == 0) scale[r] = s;
}

__global__ void scale_rows_kernel(float* y, int64_t y_stride, const float* scale, int64_t n) {
  const int64_t r = blockIdx.x;
  const float s = scale[r];
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    y[r * y_stride + i] *= s;
  }
}

__global__ void add_bias_kernel(float* y, int64_t y_stride, const void* bias, ElemType type,
                                int64_t n) {
  const int64_t r = blockIdx.x;
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    y[r * y_stride + i] += load_elem(bias, i, type);
  }
}

__global__ void copy_rows_kernel(const float* src, int64_t s_stride, float* dst, int64_t d_stride,
                                 int64_t n) {
  const int64_t r = blockIdx.x;
  for (int64_t i = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    dst[r * d_stride + i] = src[r * s_stride + i];
  }
}

// One block per row: each thread keeps its best (value, column), then a shared-memory tree.
__global__ void argmax_rows_kernel(const float* logits, int64_t stride, int64_t num_logit_rows,
                                   int64_t n, const int32_t* rows, int32_t* out,
                                   DeviceErrors* errors) {
  __shared__ float best_v[kRowThreads];
  __shared__ int64_t best_i[kRowThreads];
  const int32_t row = rows[blockIdx.x];
  if (row < 0 || row >= num_logit_rows) {
    if (threadIdx.x == 0) {
      report(errors, DeviceError::kRow, blockIdx.x, row, num_logit_rows);
      out[blockIdx.x] = -1;
    }
    return;
  }
  const float* x = logits + row * stride;
  float v = -INFINITY;
  int64_t at = n;  // past the end: loses every comparison below
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (x[i] > v || at == n) {
      v = x[i];
      at = i;
    }
  }
  best_v[threadIdx.x] = v;
  best_i[threadIdx.x] = at;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const float ov = best_v[threadIdx.x + half];
      const int64_t oi = best_i[threadIdx.x + half];
      if (oi < n && (best_i[threadIdx.x] == n || ov > best_v[threadIdx.x] ||
                     (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x]))) {
        best_v[threadIdx.x] = ov;
        best_i[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int32_t>(best_i[0]);
}

template <typename T>
__global__ void write_kv_kernel(const float* k, int64_t k_s0, int64_t k_s1, const float* v,
                                int64_t v_s0, int64_t v_s1, const int32_t* slot_mapping,
                                int32_t layer, KvCacheArgs cache, DeviceErrors* errors) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  const int64_t slots = static_cast<int64_t>(cache.num_blocks) * cache.block_size;
  if (slot == -1) return;  // a padding row of a captured batch
  if (slot < 0 || slot >= slots) {
    if (threadIdx.x == 0) report(errors, DeviceError::kSlot, t, slot, slots);
    return;
  }
  T* block = reinterpret_cast<T*>(cache.base + (slot / cache.block_size) * cache.block_bytes);
  const int64_t token_elems = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  T* k_dst = block + layer * cache.layer_elems + (slot % cache.block_size) * token_elems;
  T* v_dst = k_dst + cache.kv_elems;
  for (int64_t e = threadIdx.x; e < token_elems; e += blockDim.x) {
    const int64_t h = e / cache.head_dim, i = e % cache.head_dim;
    k_dst[e] = from_f32<T>(k[t * k_s0 + h * k_s1 + i]);
    v_dst[e] = from_f32<T>(v[t * v_s0 + h * v_s1 + i]);
  }
}

// Rows on x (up to 2^31 - 1), up to 64 blocks along each row on y.
dim3 row_grid(int64_t rows, int64_t n) {
  const unsigned per_row = blocks_for(n, kElemThreads);
  return dim3(static_cast<unsigned>(rows), per_row > 64 ? 64 : per_row);
}

}  // namespace

cudaError_t launch_rmsnorm(const float* x, int64_t x_stride, float* residual, int64_t r_stride,
                           const float* add, int64_t add_stride, const void* w, ElemType w_type,
                           float eps, float* y, int64_t y_stride, int64_t rows, int64_t d,
                           cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  rmsnorm_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      x, x_stride, residual, r_stride, add, add_stride, w, w_type, eps, y, y_stride, d);
  return cudaGetLastError();
}

cudaError_t launch_rope(float* q, int64_t q_s0, int64_t q_s1, int64_t hq, float* k, int64_t k_s0,
                        int64_t k_s1, int64_t hk, int64_t tokens, const int32_t* positions,
                        const RopeArgs& args, DeviceErrors* errors, cudaStream_t stream) {
  if (tokens == 0 || args.half == 0) return cudaSuccess;
  rope_kernel<<<static_cast<unsigned>(tokens), kRowThreads, 0, stream>>>(
      q, q_s0, q_s1, hq, k, k_s0, k_s1, hk, positions, args, errors);
  return cudaGetLastError();
}

cudaError_t launch_silu_mul(const float* gate, int64_t g_stride, const float* up, int64_t u_stride,
                            float* out, int64_t o_stride, int64_t rows, int64_t f,
                            cudaStream_t stream) {
  if (rows == 0 || f == 0) return cudaSuccess;
  silu_mul_kernel<<<row_grid(rows, f), kElemThreads, 0, stream>>>(gate, g_stride, up, u_stride, out,
                                                                  o_stride, f);
  return cudaGetLastError();
}

cudaError_t launch_embedding(const int32_t* ids, const void* table, ElemType type,
                             int64_t table_stride, int64_t vocab, float* out, int64_t o_stride,
                             int64_t tokens, int64_t d, DeviceErrors* errors, cudaStream_t stream) {
  if (tokens == 0 || d == 0) return cudaSuccess;
  embedding_kernel<<<static_cast<unsigned>(tokens), kRowThreads, 0, stream>>>(
      ids, table, type, table_stride, vocab, out, o_stride, d, errors);
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(const float* src, int64_t s_stride, int64_t src_rows,
                               const int32_t* rows, float* dst, int64_t d_stride, int64_t r,
                               int64_t d, DeviceErrors* errors, cudaStream_t stream) {
  if (r == 0 || d == 0) return cudaSuccess;
  gather_rows_kernel<<<static_cast<unsigned>(r), kRowThreads, 0, stream>>>(
      src, s_stride, src_rows, rows, dst, d_stride, d, errors);
  return cudaGetLastError();
}

cudaError_t launch_softmax(float* x, int64_t stride, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  softmax_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(x, stride, n);
  return cudaGetLastError();
}

cudaError_t launch_convert_rows(const float* src, int64_t src_stride, void* dst, ElemType type,
                                int64_t rows, int64_t k, cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  const dim3 grid = row_grid(rows, k);
  switch (type) {
    case ElemType::kBF16:
      convert_rows_kernel<<<grid, kElemThreads, 0, stream>>>(src, src_stride,
                                                             static_cast<__nv_bfloat16*>(dst), k);
      break;
    case ElemType::kF16:
      convert_rows_kernel<<<grid, kElemThreads, 0, stream>>>(src, src_stride,
                                                             static_cast<__half*>(dst), k);
      break;
    default:
      convert_rows_kernel<<<grid, kElemThreads, 0, stream>>>(src, src_stride,
                                                             static_cast<float*>(dst), k);
      break;
  }
  return cudaGetLastError();
}

cudaError_t launch_convert_rows_f16_scaled(const float* src, int64_t src_stride, void* dst,
                                           float* scale, int64_t rows, int64_t k,
                                           cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  convert_rows_f16_scaled_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      src, src_stride, static_cast<__half*>(dst), scale, k);
  return cudaGetLastError();
}

cudaError_t launch_scale_rows(float* y, int64_t y_stride, const float* scale, int64_t rows,
                              int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  scale_rows_kernel<<<row_grid(rows, n), kElemThreads, 0, stream>>>(y, y_stride, scale, n);
  return cudaGetLastError();
}

cudaError_t launch_add_bias(float* y, int64_t y_stride, const void* bias, ElemType type,
                            int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  add_bias_kernel<<<row_grid(rows, n), kElemThreads, 0, stream>>>(y, y_stride, bias, type, n);
  return cudaGetLastError();
}

cudaError_t launch_copy_rows(const float* src, int64_t s_stride, float* dst, int64_t d_stride,
                             int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  copy_rows_kernel<<<row_grid(rows, n), kElemThreads, 0, stream>>>(src, s_stride, dst, d_stride, n);
  return cudaGetLastError();
}

cudaError_t launch_argmax_rows(const float* logits, int64_t stride, int64_t num_logit_rows,
                               int64_t n, const int32_t* rows, int32_t num_rows, int32_t* out,
                               DeviceErrors* errors, cudaStream_t stream) {
  if (num_rows == 0) return cudaSuccess;
  argmax_rows_kernel<<<static_cast<unsigned>(num_rows), kRowThreads, 0, stream>>>(
      logits, stride, num_logit_rows, n, rows, out, errors);
  return cudaGetLastError();
}

cudaError_t launch_write_kv(const float* k, int64_t k_s0, int64_t k_s1, const float* v,
                            int64_t v_s0, int64_t v_s1, int64_t tokens, const int32_t* slot_mapping,
                            int32_t layer, const KvCacheArgs& cache, DeviceErrors* errors,
                            cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(tokens);
  switch (cache.type) {
    case ElemType::kBF16:
      write_kv_kernel<__nv_bfloat16><<<grid, kRowThreads, 0, stream>>>(
          k, k_s0, k_s1, v, v_s0, v_s1, slot_mapping, layer, cache, errors);
      break;
    case ElemType::kF16:
      write_kv_kernel<__half><<<grid, kRowThreads, 0, stream>>>(k, k_s0, k_s1, v, v_s0, v_s1,
                                                                slot_mapping, layer, cache, errors);
      break;
    default:
      write_kv_kernel<float><<<grid, kRowThreads, 0, stream>>>(k, k_s0, k_s1, v, v_s0, v_s1,
                                                               slot_mapping, layer, cache, errors);
      break;
  }
  return cudaGetLastError();
}

}  // namespace tierserve::cuda

// Q4 (W4A16) kernels (kernels/q4_weight.h's layout): the fused GEMV for small batches, the
// dequantization of row tiles to f16 for cuBLAS, and the act-order gather of x.
#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

// Group `at` (= row * groups + group) of the weight as w = s * q - m (kernels/q4_weight.h).
__device__ void group_scale(const Q4Args& a, int64_t at, float* s, float* m) {
  if (a.k_quant) {
    const __half* dd = reinterpret_cast<const __half*>(a.blob + a.supers_offset) + 2 * (at / 8);
    *s = __half2float(dd[0]) * static_cast<float>(a.blob[a.scales_offset + at]);
    *m = __half2float(dd[1]) * static_cast<float>(a.blob[a.zeros_offset + at]);
  } else {
    *s = __half2float(reinterpret_cast<const __half*>(a.blob + a.scales_offset)[at]);
    *m = *s * static_cast<float>(a.blob[a.zeros_offset + at]);
  }
}

// One warp per output row. Lane l takes 32-column blocks l, l + 32, ...: for each it widens the
// 16 bytes of nibbles, forms dot = sum q * x and sx = sum x over the block, and adds
// s * dot - m * sx (group_scale) to its sum for every row of x; the warp then reduces by shuffles.
// A row of x is summed in an order that depends only on k and the group size, not on m.
template <int M>
__global__ void q4_gemv_kernel(Q4Args a, const float* x, int64_t ldx, int32_t m, float* y,
                               int64_t ldy) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= a.n) return;
  const int64_t groups = a.k / a.group_size;
  const uint8_t* row = a.blob + r * (a.k / 2);
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0.0f;
  for (int64_t b = lane; b < a.k / 32; b += 32) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + b * 16);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    float s, gm;
    group_scale(a, r * groups + b * 32 / a.group_size, &s, &gm);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      if (i >= m) break;
      const float* xb = x + i * ldx + b * 32;
      float dot = 0.0f, sx = 0.0f;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const uint32_t byte = (words[j / 4] >> (8 * (j % 4))) & 0xffu;
        const float lo = xb[j], hi = xb[16 + j];
        dot += static_cast<float>(byte & 0xfu) * lo + static_cast<float>(byte >> 4) * hi;
        sx += lo + hi;
      }
      acc[i] += s * dot - gm * sx;
    }
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    float v = acc[i];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0 && i < m) y[i * ldy + r] = v;
  }
}

// Rows [row_begin, row_begin + rows) dequantized to f16: out[i, c] = s * q - m.
__global__ void q4_dequantize_kernel(Q4Args a, int64_t row_begin, int64_t rows, __half* out) {
  const int64_t blocks = a.k / 32;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * blocks) return;
  const int64_t i = item / blocks, b = item % blocks, r = row_begin + i;
  const int64_t groups = a.k / a.group_size, g = b * 32 / a.group_size;
  const uint8_t* block = a.blob + r * (a.k / 2) + b * 16;
  float s, m;
  group_scale(a, r * groups + g, &s, &m);
  __half* o = out + i * a.k + b * 32;
  for (int j = 0; j < 16; ++j) {
    o[j] = __float2half_rn(s * static_cast<float>(block[j] & 0xf) - m);
    o[16 + j] = __float2half_rn(s * static_cast<float>(block[j] >> 4) - m);
  }
}

__global__ void gather_columns_kernel(const float* x, int64_t ldx, const int32_t* perm, int64_t m,
                                      int64_t k, float* out) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= m * k) return;
  const int64_t i = item / k, c = item % k;
  out[item] = x[i * ldx + perm[c]];
}

int64_t grid_for(int64_t items, int threads) { return (items + threads - 1) / threads; }

}  // namespace

cudaError_t launch_q4_gemv(const Q4Args& a, const float* x, int64_t ldx, int32_t m, float* y,
                           int64_t ldy, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(grid_for(a.n, kWarpsPerBlock)));
  const dim3 block(32 * kWarpsPerBlock);
  switch (m) {
    case 1:
      q4_gemv_kernel<1><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    case 2:
      q4_gemv_kernel<2><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    case 3:
    case 4:
      q4_gemv_kernel<4><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    default:
      q4_gemv_kernel<kQ4GemvMaxRows><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
  }
  return cudaGetLastError();
}

cudaError_t launch_q4_dequantize(const Q4Args& a, int64_t row_begin, int64_t rows, void* out,
                                 cudaStream_t stream) {
  const int threads = 256;
  q4_dequantize_kernel<<<static_cast<unsigned>(grid_for(rows * (a.k / 32), threads)), threads, 0,
                         stream>>>(a, row_begin, rows, static_cast<__half*>(out));
  return cudaGetLastError();
}

cudaError_t launch_gather_columns(const float* x, int64_t ldx, const int32_t* perm, int64_t m,
                                  int64_t k, float* out, cudaStream_t stream) {
  const int threads = 256;
  gather_columns_kernel<<<static_cast<unsigned>(grid_for(m * k, threads)), threads, 0, stream>>>(
      x, ldx, perm, m, k, out);
  return cudaGetLastError();
}

}  // namespace tierserve::cuda

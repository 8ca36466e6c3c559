// Q8 (W8A16) kernels (kernels/q8_weight.h's layout): the fused GEMV for small batches and the
// dequantization of row tiles to f16 for cuBLAS.
#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

// One warp per output row. Lane l takes 32-column blocks l, l + 32, ...: for each it loads the
// 32 int8 values (two 16-byte loads), forms each weight as scale * q in f32 and adds w * x for
// every row of x; the warp then reduces by shuffles. A row of x is summed in an order that
// depends only on k, not on m.
template <int M>
__global__ void q8_gemv_kernel(Q8Args a, const float* x, int64_t ldx, int32_t m, float* y,
                               int64_t ldy) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= a.n) return;
  const int64_t groups = a.k / a.group_size;
  const int8_t* row = reinterpret_cast<const int8_t*>(a.blob) + r * a.k;
  const float* scales = reinterpret_cast<const float*>(a.blob + a.scales_offset) + r * groups;
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0.0f;
  for (int64_t b = lane; b < a.k / 32; b += 32) {
    const int4 raw[2] = {*reinterpret_cast<const int4*>(row + b * 32),
                         *reinterpret_cast<const int4*>(row + b * 32 + 16)};
    const int8_t* q = reinterpret_cast<const int8_t*>(raw);
    const float s0 = scales[b * 32 / a.group_size], s1 = scales[(b * 32 + 16) / a.group_size];
#pragma unroll
    for (int i = 0; i < M; ++i) {
      if (i >= m) break;
      const float* xb = x + i * ldx + b * 32;
      float dot = 0.0f;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        const float w = (j < 16 ? s0 : s1) * static_cast<float>(q[j]);
        dot += w * xb[j];
      }
      acc[i] += dot;
    }
  }
#pragma unroll
  for (int i = 0; i < M; ++i) {
    float v = acc[i];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0 && i < m) y[i * ldy + r] = v;
  }
}

// Rows [row_begin, row_begin + rows) dequantized to f16: out[i, c] = scale * q.
__global__ void q8_dequantize_kernel(Q8Args a, int64_t row_begin, int64_t rows, __half* out) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * a.k) return;
  const int64_t i = item / a.k, c = item % a.k, r = row_begin + i;
  const float s = reinterpret_cast<const float*>(
      a.blob + a.scales_offset)[r * (a.k / a.group_size) + c / a.group_size];
  const int8_t q = reinterpret_cast<const int8_t*>(a.blob)[r * a.k + c];
  out[item] = __float2half_rn(s * static_cast<float>(q));
}

int64_t grid_for(int64_t items, int threads) { return (items + threads - 1) / threads; }

}  // namespace

cudaError_t launch_q8_gemv(const Q8Args& a, const float* x, int64_t ldx, int32_t m, float* y,
                           int64_t ldy, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(grid_for(a.n, kWarpsPerBlock)));
  const dim3 block(32 * kWarpsPerBlock);
  switch (m) {
    case 1:
      q8_gemv_kernel<1><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    case 2:
      q8_gemv_kernel<2><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    case 3:
    case 4:
      q8_gemv_kernel<4><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
    default:
      q8_gemv_kernel<kQ4GemvMaxRows><<<grid, block, 0, stream>>>(a, x, ldx, m, y, ldy);
      break;
  }
  return cudaGetLastError();
}

cudaError_t launch_q8_dequantize(const Q8Args& a, int64_t row_begin, int64_t rows, void* out,
                                 cudaStream_t stream) {
  const int threads = 256;
  q8_dequantize_kernel<<<static_cast<unsigned>(grid_for(rows * a.k, threads)), threads, 0,
                         stream>>>(a, row_begin, rows, static_cast<__half*>(out));
  return cudaGetLastError();
}

}  // namespace tierserve::cuda

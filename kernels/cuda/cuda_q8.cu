// Q8 (W8A16) kernels (kernels/q8_weight.h's layout): the fused GEMV for small batches and the
// dequantization of row tiles to f16 for cuBLAS.
#include "kernels/cuda/cuda_elem.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

// The weight scale * q (- min), each step rounded to f32 on its own (no fused multiply-add), as
// the CPU reference forms it.
__device__ __forceinline__ float q8_weight(float scale, int8_t q, const float* min) {
  const float product = __fmul_rn(scale, static_cast<float>(q));
  return min != nullptr ? __fsub_rn(product, *min) : product;
}

// One warp per output row. Lane l takes 32-column blocks l, l + 32, ...: for each it loads the
// 32 int8 values (two 16-byte loads), forms each weight in f32 (q8_weight) and adds w * x for
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
  const float* mins =
      a.with_mins ? reinterpret_cast<const float*>(a.blob + a.mins_offset) + r * groups : nullptr;
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0.0f;
  for (int64_t b = lane; b < a.k / 32; b += 32) {
    const int4 raw[2] = {*reinterpret_cast<const int4*>(row + b * 32),
                         *reinterpret_cast<const int4*>(row + b * 32 + 16)};
    const int8_t* q = reinterpret_cast<const int8_t*>(raw);
    const int64_t g0 = b * 32 / a.group_size, g1 = (b * 32 + 16) / a.group_size;
    const float s0 = scales[g0], s1 = scales[g1];
    const float* m0 = mins != nullptr ? mins + g0 : nullptr;
    const float* m1 = mins != nullptr ? mins + g1 : nullptr;
    float w[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) w[j] = j < 16 ? q8_weight(s0, q[j], m0) : q8_weight(s1, q[j], m1);
#pragma unroll
    for (int i = 0; i < M; ++i) {
      if (i >= m) break;
      const float* xb = x + i * ldx + b * 32;
      float dot = 0.0f;
#pragma unroll
      for (int j = 0; j < 32; ++j) dot += w[j] * xb[j];
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

// Rows [row_begin, row_begin + rows) dequantized to f16: out[i, c] = scale * q (- min).
__global__ void q8_dequantize_kernel(Q8Args a, int64_t row_begin, int64_t rows, __half* out) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * a.k) return;
  const int64_t i = item / a.k, c = item % a.k, r = row_begin + i;
  const int64_t g = r * (a.k / a.group_size) + c / a.group_size;
  const float s = reinterpret_cast<const float*>(a.blob + a.scales_offset)[g];
  const float* min =
      a.with_mins ? reinterpret_cast<const float*>(a.blob + a.mins_offset) + g : nullptr;
  const int8_t q = reinterpret_cast<const int8_t*>(a.blob)[r * a.k + c];
  out[item] = __float2half_rn(q8_weight(s, q, min));
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

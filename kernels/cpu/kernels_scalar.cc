// The scalar reference path of the CPU kernels (cpu_kernels.h): plain loops in f32, compiled with
// the baseline flags. The AVX2 and AVX-512 paths are tested against these functions.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {
namespace {

float dot_f32(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float dot_bf16(const float* a, const uint16_t* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * bf16_to_f32(b[i]);
  return s;
}

float dot_f16(const float* a, const uint16_t* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}

void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void axpy_bf16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * bf16_to_f32(x[i]);
}

void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * f16_to_f32(x[i]);
}

void scale_by_weight(const float* x, const float* w, float inv, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  scale_by_weight(x, w, 1.0f / std::sqrt(ss / static_cast<float>(n) + eps), y, n);
}

void add_rmsnorm(float* residual, const float* x, const float* w, float eps, float* y, int64_t n) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    residual[i] += x[i];
    ss += residual[i] * residual[i];
  }
  scale_by_weight(residual, w, 1.0f / std::sqrt(ss / static_cast<float>(n) + eps), y, n);
}

void softmax(float* x, int64_t n) {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void f32_to_bf16_n(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void f32_to_f16_n(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

void bf16_to_f32_n(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void f16_to_f32_n(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

// One GEMV body for every weight type: rows of x against one weight row at a time.
template <typename W, float (*kToF32)(W)>
void gemv(const GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t xs = gemv_x_stride(a.k);
  const W* w = static_cast<const W*>(a.w);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const W* row = w + r * a.k;
    for (int32_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * xs;
      float s = 0.0f;
      for (int64_t j = 0; j < a.k; ++j) s += x[j] * kToF32(row[j]);
      a.y[i * a.ldy + r] = a.bias != nullptr ? s + a.bias[r] : s;
    }
  }
}

float f32_identity(float v) { return v; }

constexpr CpuKernels kScalarKernels = {
    .isa = CpuIsa::kScalar,
    .dot_f32 = dot_f32,
    .dot_bf16 = dot_bf16,
    .dot_f16 = dot_f16,
    .axpy_f32 = axpy_f32,
    .axpy_bf16 = axpy_bf16,
    .axpy_f16 = axpy_f16,
    .rmsnorm = rmsnorm,
    .add_rmsnorm = add_rmsnorm,
    .softmax = softmax,
    .silu_mul = silu_mul,
    .f32_to_bf16 = f32_to_bf16_n,
    .f32_to_f16 = f32_to_f16_n,
    .bf16_to_f32 = bf16_to_f32_n,
    .f16_to_f32 = f16_to_f32_n,
    .pack_gemv_x = pack_gemv_x_plain,
    .pack_gemv_x_bf16 = pack_gemv_x_plain,
    .gemv_f32 = gemv<float, f32_identity>,
    .gemv_bf16 = gemv<uint16_t, bf16_to_f32>,
    .gemv_f16 = gemv<uint16_t, f16_to_f32>,
    .gemv_q4 = q4_gemv_scalar,
    .gemv_q8 = q8_gemv_scalar,
};

}  // namespace

void pack_gemv_x_plain(const float* x, int64_t ldx, int32_t m, int64_t k, float* out) {
  const int64_t xs = gemv_x_stride(k);
  for (int32_t i = 0; i < m; ++i) {
    std::memcpy(out + i * xs, x + i * ldx, static_cast<size_t>(k) * sizeof(float));
    for (int64_t j = k; j < xs; ++j) out[i * xs + j] = 0.0f;
  }
}

const CpuKernels& scalar_kernels() { return kScalarKernels; }

const CpuKernels& cpu_kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return avx512_kernels();
    case CpuIsa::kAvx2:
      return avx2_kernels();
    case CpuIsa::kAuto:
      return cpu_kernels(resolve_cpu_isa(isa));
    case CpuIsa::kScalar:
      break;
  }
  return scalar_kernels();
}

}  // namespace tierserve

// The table of hand-written CPU row kernels, one table per instruction-set path (cpu_isa.h).
// Every path computes the same functions; the scalar path is the reference the others are tested
// against. Kernels are single-threaded, allocate nothing, and trust their arguments: the backend
// checks shapes before calling them.
#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_isa.h"

namespace tierserve {

// The GEMV kernels handle up to this many rows of x per call; larger m goes to oneDNN, or to
// groups of rows in batch-invariant mode (cpu_gemm.h).
inline constexpr int32_t kGemvMaxM = 4;
// Packed GEMV inputs are padded with zeros to a multiple of this many elements.
inline constexpr int64_t kGemvBlock = 32;

inline constexpr int64_t gemv_x_stride(int64_t k) {
  return (k + kGemvBlock - 1) / kGemvBlock * kGemvBlock;
}

// A small-m matrix-vector product over a range of output columns:
//   y[i, r] = sum_j x[i, j] * w[r, j] (+ bias[r])   for i < m, r in [r_begin, r_end).
// Batch invariance, which CpuGemmOptions::batch_invariant relies on: y[i, r] is computed by the
// same floating-point operations, in the same order, whatever m, the other rows of x and
// [r_begin, r_end) are, so it is bitwise equal to the m = 1 result for row i alone (within one
// table; paths differ from each other). cpu_batch_invariance_test checks this on every path.
struct GemvArgs {
  const float* x = nullptr;     // [m, gemv_x_stride(k)] packed for w's dtype by the same table
  int32_t m = 0;                // rows of x, 1..kGemvMaxM
  int64_t k = 0;                // reduction length (row length of w)
  const void* w = nullptr;      // [n, k] row-major; f32, bf16 or f16 as the function says
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [m, ldy]
  int64_t ldy = 0;              // row stride of y in elements
};

using GemvFn = void (*)(const GemvArgs& args, int64_t r_begin, int64_t r_end);

// The W4A16 GEMV over output rows [r_begin, r_end) of a Q4 weight (kernels/q4_weight.h):
//   y[i, r] = sum_g (s[r, g] * sum_{c in g} q[r, c] * x[i, c] - m[r, g] * xsum[i, g]) (+ bias[r])
// where w = s * q - m over group g (s = scale and m = scale * zero in the zero form; s = d * scale
// and m = dmin * zero in the k-quant form), x is in the weight's stored column order (gathered
// through perm for act order) and xsum[i, g] is the sum of x[i, :] over group g.
// Batch-invariant as GemvFn.
struct Q4GemvArgs {
  const float* x = nullptr;  // [m, ldx]
  int64_t ldx = 0;
  const float* xsum = nullptr;       // [m, k / group_size]
  int32_t m = 0;                     // 1..kGemvMaxM
  int64_t k = 0;                     // a multiple of group_size
  int32_t group_size = 0;            // a multiple of 32
  const uint8_t* nibbles = nullptr;  // the blob's sections (kernels/q4_weight.h)
  const uint16_t* scales = nullptr;  // zero form
  const uint8_t* zeros = nullptr;
  const uint8_t* sub_scales = nullptr;  // k-quant form: set, with supers, instead of scales
  const uint16_t* supers = nullptr;
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [m, ldy]
  int64_t ldy = 0;
};
using Q4GemvFn = void (*)(const Q4GemvArgs& args, int64_t r_begin, int64_t r_end);

// The W8A16 GEMV over output rows [r_begin, r_end) of a Q8 weight (kernels/q8_weight.h):
//   y[i, r] = sum_c w[r, c] * x[i, c] (+ bias[r]),  w = scale[r, g] * q[r, c] (- min[r, g])
// each weight formed in f32 as llama.cpp dequantizes it (the product, then the difference, each
// rounded). Batch-invariant as GemvFn.
struct Q8GemvArgs {
  const float* x = nullptr;  // [m, ldx]
  int64_t ldx = 0;
  int32_t m = 0;                   // 1..kGemvMaxM
  int64_t k = 0;                   // a multiple of 32
  int32_t group_size = 0;          // 16 or 32
  const int8_t* values = nullptr;  // the blob's sections
  const float* scales = nullptr;
  const float* mins = nullptr;  // null without mins
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [m, ldy]
  int64_t ldy = 0;
};
using Q8GemvFn = void (*)(const Q8GemvArgs& args, int64_t r_begin, int64_t r_end);
// Packs x[m, k] (row stride ldx) into out[m, gemv_x_stride(k)], zero padded.
using PackGemvXFn = void (*)(const float* x, int64_t ldx, int32_t m, int64_t k, float* out);

struct CpuKernels {
  CpuIsa isa = CpuIsa::kScalar;  // the path these functions belong to

  // sum_i a[i] * b[i] with b converted to f32; f32 accumulation.
  float (*dot_f32)(const float* a, const float* b, int64_t n) = nullptr;
  float (*dot_bf16)(const float* a, const uint16_t* b, int64_t n) = nullptr;
  float (*dot_f16)(const float* a, const uint16_t* b, int64_t n) = nullptr;
  // y[i] += alpha * x[i], x converted to f32.
  void (*axpy_f32)(float alpha, const float* x, float* y, int64_t n) = nullptr;
  void (*axpy_bf16)(float alpha, const uint16_t* x, float* y, int64_t n) = nullptr;
  void (*axpy_f16)(float alpha, const uint16_t* x, float* y, int64_t n) = nullptr;

  // One row of RMSNorm: y = x / sqrt(mean(x^2) + eps) * w. x and y may alias.
  void (*rmsnorm)(const float* x, const float* w, float eps, float* y, int64_t n) = nullptr;
  // residual += x, then y = rmsnorm(residual, w, eps). y may alias x.
  void (*add_rmsnorm)(float* residual, const float* x, const float* w, float eps, float* y,
                      int64_t n) = nullptr;
  // In-place softmax of one row, max subtracted. n >= 1.
  void (*softmax)(float* x, int64_t n) = nullptr;
  // out = silu(gate) * up; out may alias either input.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n) = nullptr;

  // Conversions with round-to-nearest-even (as common/dtype.h); src and dst must not overlap.
  void (*f32_to_bf16)(const float* src, uint16_t* dst, int64_t n) = nullptr;
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n) = nullptr;
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n) = nullptr;
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n) = nullptr;

  // Small-m GEMV by weight dtype, and the packing of x each one expects.
  PackGemvXFn pack_gemv_x = nullptr;       // for gemv_f32 and gemv_f16
  PackGemvXFn pack_gemv_x_bf16 = nullptr;  // for gemv_bf16
  GemvFn gemv_f32 = nullptr;
  GemvFn gemv_bf16 = nullptr;
  GemvFn gemv_f16 = nullptr;
  Q4GemvFn gemv_q4 = nullptr;
  Q8GemvFn gemv_q8 = nullptr;
};

// The table of `isa`, which must be resolved (not kAuto) and supported by the running CPU.
const CpuKernels& cpu_kernels(CpuIsa isa);

// Per-path tables, each defined in its own translation unit (kernels_<isa>.cc).
const CpuKernels& scalar_kernels();
const CpuKernels& avx2_kernels();
const CpuKernels& avx512_kernels();

// The Q4 GEMV of each path (q4_gemv_<isa>.cc).
void q4_gemv_scalar(const Q4GemvArgs& args, int64_t r_begin, int64_t r_end);
void q4_gemv_avx2(const Q4GemvArgs& args, int64_t r_begin, int64_t r_end);
void q4_gemv_avx512(const Q4GemvArgs& args, int64_t r_begin, int64_t r_end);
// The Q8 GEMV of each path (q8_gemv_<isa>.cc).
void q8_gemv_scalar(const Q8GemvArgs& args, int64_t r_begin, int64_t r_end);
void q8_gemv_avx2(const Q8GemvArgs& args, int64_t r_begin, int64_t r_end);
void q8_gemv_avx512(const Q8GemvArgs& args, int64_t r_begin, int64_t r_end);

// The plain (unpermuted) x packing, shared by every path.
void pack_gemv_x_plain(const float* x, int64_t ldx, int32_t m, int64_t k, float* out);

}  // namespace tierserve

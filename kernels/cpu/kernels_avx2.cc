// The AVX2 path of the CPU kernels (cpu_kernels.h). This file alone is compiled with -mavx2 -mfma
// -mf16c (CMakeLists.txt) and is only called after cpu_supports_isa(kAvx2). Everything here lives
// in an anonymous namespace and calls no inline function of another header: such a function,
// instantiated here, would be compiled for AVX2 and the linker could keep this copy for the whole
// (baseline) binary.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {
namespace {

constexpr int64_t kLanes = 8;

// All-ones in lanes [0, n), 0 <= n < 8: the mask of maskload/maskstore.
__m256i head_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The first n (< 8) 16-bit elements of p, zero extended to a full 128-bit register.
__m128i load_head_u16(const uint16_t* p, int64_t n) {
  alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}

// --- Loads of 8 elements (or the first n, the rest zero) as f32 -------------------------------

struct F32 {
  using T = float;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 load_head(const float* p, int64_t n) { return _mm256_maskload_ps(p, head_mask(n)); }
};

struct BF16 {
  using T = uint16_t;
  static __m256 widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static __m256 load(const uint16_t* p) {
    return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static __m256 load_head(const uint16_t* p, int64_t n) { return widen(load_head_u16(p, n)); }
};

struct F16 {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static __m256 load_head(const uint16_t* p, int64_t n) {
    return _mm256_cvtph_ps(load_head_u16(p, n));
  }
};

// --- exp --------------------------------------------------------------------------------------

// e^x with a Cephes-style degree-6 polynomial, within 2 ulp of expf on [-87.3, 88.3]. Inputs
// are clamped to that range, so the result is never infinite and never denormal.
__m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365478515625f)),
                    _mm256_set1_ps(88.3762626647949f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// --- dot and axpy -----------------------------------------------------------------------------

template <class B>
float dot(const float* a, const typename B::T* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), B::load(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + kLanes), B::load(b + i + kLanes), s1);
  }
  for (; i + kLanes <= n; i += kLanes) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), B::load(b + i), s0);
  }
  if (i < n) s1 = _mm256_fmadd_ps(F32::load_head(a + i, n - i), B::load_head(b + i, n - i), s1);
  return hsum(_mm256_add_ps(s0, s1));
}

template <class X>
void axpy(float alpha, const typename X::T* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, X::load(x + i), _mm256_loadu_ps(y + i)));
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    _mm256_maskstore_ps(
        y + i, m, _mm256_fmadd_ps(va, X::load_head(x + i, n - i), _mm256_maskload_ps(y + i, m)));
  }
}

// --- Normalisation, softmax, activation ---------------------------------------------------------

void scale_by_weight(const float* x, const float* w, float inv, float* y, int64_t n) {
  const __m256 vi = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(
        y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi), _mm256_loadu_ps(w + i)));
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    _mm256_maskstore_ps(y + i, m,
                        _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x + i, m), vi),
                                      _mm256_maskload_ps(w + i, m)));
  }
}

float inv_rms(float sum_squares, int64_t n, float eps) {
  return 1.0f / __builtin_sqrtf(sum_squares / static_cast<float>(n) + eps);
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
  __m256 ss = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 v = _mm256_loadu_ps(x + i);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  if (i < n) {
    const __m256 v = F32::load_head(x + i, n - i);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  scale_by_weight(x, w, inv_rms(hsum(ss), n, eps), y, n);
}

void add_rmsnorm(float* residual, const float* x, const float* w, float eps, float* y, int64_t n) {
  __m256 ss = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(residual + i), _mm256_loadu_ps(x + i));
    _mm256_storeu_ps(residual + i, v);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    const __m256 v =
        _mm256_add_ps(_mm256_maskload_ps(residual + i, m), _mm256_maskload_ps(x + i, m));
    _mm256_maskstore_ps(residual + i, m, v);
    ss = _mm256_fmadd_ps(v, v, ss);
  }
  scale_by_weight(residual, w, inv_rms(hsum(ss), n, eps), y, n);
}

float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void softmax(float* x, int64_t n) {
  __m256 vmax = _mm256_set1_ps(x[0]);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float mx = hmax(vmax);
  for (int64_t t = i; t < n; ++t) mx = x[t] > mx ? x[t] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + kLanes <= n; i += kLanes) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(m),
                                   exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vmx)));
    _mm256_maskstore_ps(x + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
  for (i = 0; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
  }
}

__m256 silu_mul_ps(__m256 g, __m256 u) {
  const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(out + i, silu_mul_ps(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = head_mask(n - i);
    _mm256_maskstore_ps(
        out + i, m, silu_mul_ps(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m)));
  }
}

// --- Conversions ------------------------------------------------------------------------------

// Round to nearest even; NaN stays a (quiet) NaN. Same results as common/dtype.h's f32_to_bf16.
// Returns the 16-bit results in the low halves of the 32-bit lanes.
__m256i bf16_bits(__m256 v) {
  const __m256i b = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  // Both sides are non-negative as signed 32-bit values, so a signed compare is exact.
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

uint16_t bf16_one(float f) {
  return static_cast<uint16_t>(_mm256_extract_epi32(bf16_bits(_mm256_set1_ps(f)), 0));
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const __m256i lo = bf16_bits(_mm256_loadu_ps(src + i));
    const __m256i hi = bf16_bits(_mm256_loadu_ps(src + i + kLanes));
    // packus interleaves 128-bit lanes: [lo0-3 hi0-3 lo4-7 hi4-7]; the permute restores order.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = bf16_one(src[i]);
}

void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), kRound));
  }
  for (; i < n; ++i) {
    dst[i] = static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(src[i]), kRound), 0));
  }
}

template <class S>
void widen_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm256_storeu_ps(dst + i, S::load(src + i));
  if (i < n) _mm256_maskstore_ps(dst + i, head_mask(n - i), S::load_head(src + i, n - i));
}

// --- GEMV ---------------------------------------------------------------------------------------
//
// As in the AVX-512 path: one weight row at a time (a single linear stream for the prefetcher),
// U independent accumulators per row of x to hide FMA latency (U independent of m, so results
// are batch-invariant within this path), x read from L1.

int64_t padded(int64_t k) { return (k + kGemvBlock - 1) / kGemvBlock * kGemvBlock; }

template <int M, int U>
void store_row(const GemvArgs& a, int64_t r, __m256 (&acc)[U][M]) {
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    __m256 sum = acc[0][i];
#pragma GCC unroll 4
    for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[u][i]);
    a.y[i * a.ldy + r] = hsum(sum) + (a.bias != nullptr ? a.bias[r] : 0.0f);
  }
}

// f32 and f16 weights against plainly packed x, 8 elements per step.
template <int M, class W>
void gemv_row_plain(const GemvArgs& a, int64_t r) {
  constexpr int U = 2;  // not a function of M: see the section comment
  const int64_t xs = padded(a.k);
  const typename W::T* w = static_cast<const typename W::T*>(a.w) + r * a.k;
  __m256 acc[U][M];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[u][i] = _mm256_setzero_ps();
  }
  int64_t j = 0;
  for (; j + U * kLanes <= a.k; j += U * kLanes) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const __m256 wv = W::load(w + j + u * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        acc[u][i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a.x + i * xs + j + u * kLanes), acc[u][i]);
      }
    }
  }
  for (; j < a.k; j += kLanes) {
    const __m256 wv = a.k - j >= kLanes ? W::load(w + j) : W::load_head(w + j, a.k - j);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      acc[0][i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a.x + i * xs + j), acc[0][i]);
    }
  }
  store_row<M, U>(a, r, acc);
}

// bf16 weights, 16 per step, split into even and odd elements by a shift and a mask (x is
// packed as 8 even then 8 odd elements per 16-block by pack_x_bf16), each into its own
// accumulator.
template <int M>
void gemv_row_bf16(const GemvArgs& a, int64_t r) {
  constexpr int U = 1;  // not a function of M: see the section comment
  const int64_t xs = padded(a.k);
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + r * a.k;
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 even[U][M], odd[U][M];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) even[u][i] = odd[u][i] = _mm256_setzero_ps();
  }
  const auto step = [&](int u, int64_t j, __m256i v) {
    const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      even[u][i] = _mm256_fmadd_ps(we, _mm256_loadu_ps(a.x + i * xs + j), even[u][i]);
      odd[u][i] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(a.x + i * xs + j + kLanes), odd[u][i]);
    }
  };
  int64_t j = 0;
  for (; j + U * 2 * kLanes <= a.k; j += U * 2 * kLanes) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      step(u, j + u * 2 * kLanes,
           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j + u * 2 * kLanes)));
    }
  }
  for (; j < a.k; j += 2 * kLanes) {
    const int64_t left = a.k - j;
    if (left >= 2 * kLanes) {
      step(0, j, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j)));
    } else {
      alignas(32) uint16_t tmp[2 * kLanes] = {};
      for (int64_t t = 0; t < left; ++t) tmp[t] = w[j + t];
      step(0, j, _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp)));
    }
  }
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) even[u][i] = _mm256_add_ps(even[u][i], odd[u][i]);
  }
  store_row<M, U>(a, r, even);
}

template <int M, class W>
void gemv_rows(const GemvArgs& a, int64_t r_begin, int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; ++r) {
    if constexpr (W::kBf16) {
      gemv_row_bf16<M>(a, r);
    } else {
      gemv_row_plain<M, W>(a, r);
    }
  }
}

template <class W>
void gemv(const GemvArgs& a, int64_t r_begin, int64_t r_end) {
  switch (a.m) {
    case 1:
      return gemv_rows<1, W>(a, r_begin, r_end);
    case 2:
      return gemv_rows<2, W>(a, r_begin, r_end);
    case 3:
      return gemv_rows<3, W>(a, r_begin, r_end);
    default:
      return gemv_rows<4, W>(a, r_begin, r_end);
  }
}

// Weight tags for gemv<>: which block kernel and which loads.
struct GemvF32 : F32 {
  static constexpr bool kBf16 = false;
};
struct GemvF16 : F16 {
  static constexpr bool kBf16 = false;
};
struct GemvBf16 : BF16 {
  static constexpr bool kBf16 = true;
};

void pack_x_bf16(const float* x, int64_t ldx, int32_t m, int64_t k, float* out) {
  const int64_t xs = padded(k);
  for (int32_t i = 0; i < m; ++i) {
    const float* src = x + i * ldx;
    float* dst = out + i * xs;
    for (int64_t j = 0; j < xs; j += 2 * kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t e = j + 2 * l, o = e + 1;
        dst[j + l] = e < k ? src[e] : 0.0f;
        dst[j + kLanes + l] = o < k ? src[o] : 0.0f;
      }
    }
  }
}

constexpr CpuKernels kAvx2Kernels = {
    .isa = CpuIsa::kAvx2,
    .dot_f32 = dot<F32>,
    .dot_bf16 = dot<BF16>,
    .dot_f16 = dot<F16>,
    .axpy_f32 = axpy<F32>,
    .axpy_bf16 = axpy<BF16>,
    .axpy_f16 = axpy<F16>,
    .rmsnorm = rmsnorm,
    .add_rmsnorm = add_rmsnorm,
    .softmax = softmax,
    .silu_mul = silu_mul,
    .f32_to_bf16 = f32_to_bf16,
    .f32_to_f16 = f32_to_f16,
    .bf16_to_f32 = widen_to_f32<BF16>,
    .f16_to_f32 = widen_to_f32<F16>,
    .pack_gemv_x = pack_gemv_x_plain,
    .pack_gemv_x_bf16 = pack_x_bf16,
    .gemv_f32 = gemv<GemvF32>,
    .gemv_bf16 = gemv<GemvBf16>,
    .gemv_f16 = gemv<GemvF16>,
    .gemv_q4 = q4_gemv_avx2,
    .gemv_q8 = q8_gemv_avx2,
};

}  // namespace

const CpuKernels& avx2_kernels() { return kAvx2Kernels; }

}  // namespace tierserve

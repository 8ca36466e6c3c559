// The AVX-512 path of the CPU kernels (cpu_kernels.h). This file alone is compiled with
// -mavx512f -mavx512bw -mavx512vl -mfma -mf16c (CMakeLists.txt) and is only called after
// cpu_supports_isa(kAvx512). Everything here lives in an anonymous namespace and calls no inline
// function of another header: such a function, instantiated here, would be compiled for AVX-512
// and the linker could keep this copy for the whole (baseline) binary.
// GCC 12's AVX-512 intrinsics read _mm512_undefined_*() values, which its own -Wuninitialized
// reports at the header's lines once inlined (GCC bug 105593); the pragma covers those lines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {
namespace {

constexpr int64_t kLanes = 16;

// Lanes [0, n) of a 16-lane mask, 0 <= n < 16.
__mmask16 head_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// --- Loads of 16 elements (or the first n) as f32 --------------------------------------------

struct F32 {
  using T = float;
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 load_head(const float* p, int64_t n) {
    return _mm512_maskz_loadu_ps(head_mask(n), p);
  }
};

struct BF16 {
  using T = uint16_t;
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const uint16_t* p) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load_head(const uint16_t* p, int64_t n) {
    return widen(_mm256_maskz_loadu_epi16(head_mask(n), p));
  }
};

struct F16 {
  using T = uint16_t;
  static __m512 load(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load_head(const uint16_t* p, int64_t n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(head_mask(n), p));
  }
};

// --- exp --------------------------------------------------------------------------------------

// e^x with a Cephes-style degree-6 polynomial, within 2 ulp of expf on [-87.3, 88.3]. Inputs
// are clamped to that range, so the result is never infinite and never denormal (e^-87.3 is
// 1.2e-38, which is 0 for every use here).
__m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3365478515625f)),
                    _mm512_set1_ps(88.3762626647949f));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

// --- dot and axpy -----------------------------------------------------------------------------

template <class B>
float dot(const float* a, const typename B::T* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), B::load(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + kLanes), B::load(b + i + kLanes), s1);
  }
  for (; i + kLanes <= n; i += kLanes) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), B::load(b + i), s0);
  }
  if (i < n) s1 = _mm512_fmadd_ps(F32::load_head(a + i, n - i), B::load_head(b + i, n - i), s1);
  return hsum(_mm512_add_ps(s0, s1));
}

template <class X>
void axpy(float alpha, const typename X::T* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, X::load(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m, _mm512_fmadd_ps(va, X::load_head(x + i, n - i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// --- Normalisation, softmax, activation ---------------------------------------------------------

void scale_by_weight(const float* x, const float* w, float inv, float* y, int64_t n) {
  const __m512 vi = _mm512_set1_ps(inv);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(
        y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi), _mm512_loadu_ps(w + i)));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi),
                                        _mm512_maskz_loadu_ps(m, w + i)));
  }
}

float inv_rms(float sum_squares, int64_t n, float eps) {
  return 1.0f / __builtin_sqrtf(sum_squares / static_cast<float>(n) + eps);
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t n) {
  __m512 ss = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 v = _mm512_loadu_ps(x + i);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  if (i < n) {
    const __m512 v = F32::load_head(x + i, n - i);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  scale_by_weight(x, w, inv_rms(hsum(ss), n, eps), y, n);
}

void add_rmsnorm(float* residual, const float* x, const float* w, float eps, float* y, int64_t n) {
  __m512 ss = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 v = _mm512_add_ps(_mm512_loadu_ps(residual + i), _mm512_loadu_ps(x + i));
    _mm512_storeu_ps(residual + i, v);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    const __m512 v =
        _mm512_add_ps(_mm512_maskz_loadu_ps(m, residual + i), _mm512_maskz_loadu_ps(m, x + i));
    _mm512_mask_storeu_ps(residual + i, m, v);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  scale_by_weight(residual, w, inv_rms(hsum(ss), n, eps), y, n);
}

void softmax(float* x, int64_t n) {
  __m512 vmax = _mm512_set1_ps(x[0]);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 sum = _mm512_setzero_ps();
  for (i = 0; i + kLanes <= n; i += kLanes) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mx));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    const __m512 e =
        _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / hsum(sum));
  for (i = 0; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

__m512 silu_mul_ps(__m512 g, __m512 u) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
  return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u);
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(out + i, silu_mul_ps(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm512_mask_storeu_ps(
        out + i, m,
        silu_mul_ps(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

// --- Conversions ------------------------------------------------------------------------------

// Round to nearest even; NaN stays a (quiet) NaN. Same results as common/dtype.h's f32_to_bf16.
__m512i bf16_bits(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan,
                               _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40)));
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtepi32_epi16(bf16_bits(_mm512_loadu_ps(src + i))));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm512_mask_cvtepi32_storeu_epi16(dst + i, m, bf16_bits(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), kRound));
  }
  if (i < n) {
    const __mmask16 m = head_mask(n - i);
    _mm256_mask_storeu_epi16(dst + i, m,
                             _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), kRound));
  }
}

template <class S>
void widen_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(dst + i, S::load(src + i));
  if (i < n) _mm512_mask_storeu_ps(dst + i, head_mask(n - i), S::load_head(src + i, n - i));
}

// --- GEMV ---------------------------------------------------------------------------------------
//
// Decode (m <= 4) is memory-bound: each weight row is read once and dotted with every row of x
// (x stays in L1). Rows are walked one at a time, so the weights are read as one linear stream,
// which the hardware prefetcher follows best: interleaving 4 rows (1.8 KB apart for k = 896
// bf16) measured 15-25% slower from DRAM. U independent accumulators per row of x keep enough
// FMAs in flight to hide their latency. U does not depend on m, so y[i, r] is summed in the same
// order whatever the other rows of x are: results are batch-invariant within this path.

int64_t padded(int64_t k) { return (k + kGemvBlock - 1) / kGemvBlock * kGemvBlock; }

template <int M, int U>
void store_row(const GemvArgs& a, int64_t r, __m512 (&acc)[U][M]) {
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    __m512 sum = acc[0][i];
#pragma GCC unroll 4
    for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][i]);
    a.y[i * a.ldy + r] = hsum(sum) + (a.bias != nullptr ? a.bias[r] : 0.0f);
  }
}

// f32 and f16 weights against plainly packed x, 16 elements per step.
template <int M, class W>
void gemv_row_plain(const GemvArgs& a, int64_t r) {
  constexpr int U = 2;  // not a function of M: see the section comment
  const int64_t xs = padded(a.k);
  const typename W::T* w = static_cast<const typename W::T*>(a.w) + r * a.k;
  __m512 acc[U][M];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[u][i] = _mm512_setzero_ps();
  }
  int64_t j = 0;
  for (; j + U * kLanes <= a.k; j += U * kLanes) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const __m512 wv = W::load(w + j + u * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        acc[u][i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(a.x + i * xs + j + u * kLanes), acc[u][i]);
      }
    }
  }
  for (; j < a.k; j += kLanes) {
    const __m512 wv = a.k - j >= kLanes ? W::load(w + j) : W::load_head(w + j, a.k - j);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      acc[0][i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(a.x + i * xs + j), acc[0][i]);
    }
  }
  store_row<M, U>(a, r, acc);
}

// bf16 weights, 32 per step: the low halves of 32-bit lanes (even elements) become f32 by a
// shift and the high halves (odd elements) by a mask, so x is packed as 16 even then 16 odd
// elements per 32-block (pack_x_bf16) and no shuffle is needed. Even and odd products go to
// separate accumulators.
template <int M>
void gemv_row_bf16(const GemvArgs& a, int64_t r) {
  constexpr int U = 2;  // not a function of M: see the section comment
  const int64_t xs = padded(a.k);
  const uint16_t* w = static_cast<const uint16_t*>(a.w) + r * a.k;
  const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 even[U][M], odd[U][M];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) even[u][i] = odd[u][i] = _mm512_setzero_ps();
  }
  const auto step = [&](int u, int64_t j, __m512i v) {
    const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      even[u][i] = _mm512_fmadd_ps(we, _mm512_loadu_ps(a.x + i * xs + j), even[u][i]);
      odd[u][i] = _mm512_fmadd_ps(wo, _mm512_loadu_ps(a.x + i * xs + j + kLanes), odd[u][i]);
    }
  };
  int64_t j = 0;
  for (; j + U * 2 * kLanes <= a.k; j += U * 2 * kLanes) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      step(u, j + u * 2 * kLanes, _mm512_loadu_si512(w + j + u * 2 * kLanes));
    }
  }
  for (; j < a.k; j += 2 * kLanes) {
    const int64_t left = a.k - j;
    step(0, j,
         left >= 2 * kLanes
             ? _mm512_loadu_si512(w + j)
             : _mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << left) - 1u), w + j));
  }
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) even[u][i] = _mm512_add_ps(even[u][i], odd[u][i]);
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

constexpr CpuKernels kAvx512Kernels = {
    .isa = CpuIsa::kAvx512,
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
    .gemv_q4 = q4_gemv_avx512,
    .gemv_q8 = q8_gemv_avx512,
};

}  // namespace

const CpuKernels& avx512_kernels() { return kAvx512Kernels; }

}  // namespace tierserve

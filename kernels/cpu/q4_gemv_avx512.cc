// The AVX-512 Q4 GEMV (cpu_kernels.h). Per row of w, each group's 32-column blocks are widened
// once (nibbles -> u32 -> f32, 16 lanes) and multiplied into every row of x; the group's lane
// partials are scaled into lane accumulators, and the zero terms summed apart, so one horizontal
// sum per output remains. The order of operations for y[i, r] depends only on k and the group
// size: batch-invariant.
// Compiled with the path's target flags (CMakeLists.txt); calls no inline function of another
// header (see kernels_avx512.cc). GCC 12 warns inside its AVX-512 headers (bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {
namespace {

// The nibble stream (rows are contiguous) is prefetched this far ahead into L1 in software: at
// the kernel's pace of DRAM reads the hardware prefetchers alone leave it waiting (measured 6.2
// GB/s on two cores without, 13 with, on [8960, 1536]).
constexpr int64_t kPrefetchBytes = 2048;

// Every loop over the M rows of x is unrolled: GCC otherwise keeps the accumulator arrays in
// memory for M > 2 (measured 3.3x the m = 1 time at m = 4).
template <int M>
void rows(const Q4GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  const __m128i low_mask = _mm_set1_epi8(0x0f);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const uint8_t* row = a.nibbles + r * (a.k / 2);

    __m512 acc[M];
    float acc_zero[M];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      acc[i] = _mm512_setzero_ps();
      acc_zero[i] = 0.0f;
    }
    for (int64_t g = 0; g < groups; ++g) {
      __m512 dot[M];
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) dot[i] = _mm512_setzero_ps();
      for (int64_t c = g * a.group_size; c < (g + 1) * a.group_size; c += 32) {
        if ((c & 127) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(row + c / 2 + kPrefetchBytes), _MM_HINT_T0);
        }
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2));
        const __m128i lo = _mm_and_si128(raw, low_mask);
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low_mask);
        const __m512 q_lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
        const __m512 q_hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          const float* x = a.x + i * a.ldx + c;
          dot[i] = _mm512_fmadd_ps(q_lo, _mm512_loadu_ps(x), dot[i]);
          dot[i] = _mm512_fmadd_ps(q_hi, _mm512_loadu_ps(x + 16), dot[i]);
        }
      }
      float s, sz;  // w = s * q - sz over the group
      const int64_t at = r * groups + g;
      if (a.supers != nullptr) {
        s = _cvtsh_ss(a.supers[2 * (at / 8)]) * static_cast<float>(a.sub_scales[at]);
        sz = _cvtsh_ss(a.supers[2 * (at / 8) + 1]) * static_cast<float>(a.zeros[at]);
      } else {
        s = _cvtsh_ss(a.scales[at]);
        sz = s * static_cast<float>(a.zeros[at]);
      }
      const __m512 sv = _mm512_set1_ps(s);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        acc[i] = _mm512_fmadd_ps(sv, dot[i], acc[i]);
        acc_zero[i] += sz * a.xsum[i * groups + g];
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      a.y[i * a.ldy + r] =
          _mm512_reduce_add_ps(acc[i]) - acc_zero[i] + (a.bias != nullptr ? a.bias[r] : 0.0f);
    }
  }
}

}  // namespace

void q4_gemv_avx512(const Q4GemvArgs& a, int64_t r_begin, int64_t r_end) {
  switch (a.m) {
    case 1:
      return rows<1>(a, r_begin, r_end);
    case 2:
      return rows<2>(a, r_begin, r_end);
    case 3:
      return rows<3>(a, r_begin, r_end);
    default:
      return rows<4>(a, r_begin, r_end);
  }
}

}  // namespace tierserve

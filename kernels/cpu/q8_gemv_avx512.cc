// The AVX-512 Q8 GEMV (cpu_kernels.h). Per row of w, each 16 columns are widened once (i8 -> i32
// -> f32), multiplied by their group's scale (the weight in f32, as llama.cpp rounds it) and
// multiplied into every row of x, two lane accumulators per row of x (even and odd 16-column
// halves) so that one horizontal sum per output remains. The order of operations for y[i, r]
// depends only on k and the group size: batch-invariant.
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

// As the Q4 GEMV: the row stream is prefetched this far ahead into L1 in software.
constexpr int64_t kPrefetchBytes = 2048;

template <int M, bool kMins>
void rows(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  const int shift = a.group_size == 16 ? 4 : 5;
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int8_t* row = a.values + r * a.k;
    const float* scales = a.scales + r * groups;
    const float* mins = kMins ? a.mins + r * groups : nullptr;
    __m512 acc0[M], acc1[M];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    for (int64_t c = 0; c < a.k; c += 32) {
      if ((c & 63) == 0) {
        _mm_prefetch(reinterpret_cast<const char*>(row + c + kPrefetchBytes), _MM_HINT_T0);
      }
      const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c));
      const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c + 16));
      __m512 w0 = _mm512_mul_ps(_mm512_set1_ps(scales[c >> shift]),
                                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
      __m512 w1 = _mm512_mul_ps(_mm512_set1_ps(scales[(c + 16) >> shift]),
                                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
      if (kMins) {  // a separate rounding, never fused with the product
        w0 = _mm512_sub_ps(w0, _mm512_set1_ps(mins[c >> shift]));
        w1 = _mm512_sub_ps(w1, _mm512_set1_ps(mins[(c + 16) >> shift]));
      }
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        const float* x = a.x + i * a.ldx + c;
        acc0[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc0[i]);
        acc1[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), acc1[i]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      a.y[i * a.ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i])) +
                           (a.bias != nullptr ? a.bias[r] : 0.0f);
    }
  }
}

template <bool kMins>
void dispatch(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  switch (a.m) {
    case 1:
      return rows<1, kMins>(a, r_begin, r_end);
    case 2:
      return rows<2, kMins>(a, r_begin, r_end);
    case 3:
      return rows<3, kMins>(a, r_begin, r_end);
    default:
      return rows<4, kMins>(a, r_begin, r_end);
  }
}

}  // namespace

void q8_gemv_avx512(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  if (a.mins != nullptr) return dispatch<true>(a, r_begin, r_end);
  return dispatch<false>(a, r_begin, r_end);
}

}  // namespace tierserve

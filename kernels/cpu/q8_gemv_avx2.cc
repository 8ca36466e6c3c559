// The AVX2 Q8 GEMV (cpu_kernels.h): as the AVX-512 one with 8-lane vectors, four per 32 columns,
// two lane accumulators per row of x. Batch-invariant.
// Compiled with the path's target flags (CMakeLists.txt); calls no inline function of another
// header (see kernels_avx2.cc).
#include <immintrin.h>

#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {
namespace {

constexpr int64_t kPrefetchBytes = 2048;

template <int M, bool kMins>
void rows(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  const int shift = a.group_size == 16 ? 4 : 5;
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int8_t* row = a.values + r * a.k;
    const float* scales = a.scales + r * groups;
    const float* mins = kMins ? a.mins + r * groups : nullptr;
    __m256 acc0[M], acc1[M];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    for (int64_t c = 0; c < a.k; c += 32) {
      if ((c & 63) == 0) {
        _mm_prefetch(reinterpret_cast<const char*>(row + c + kPrefetchBytes), _MM_HINT_T0);
      }
      const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c));
      const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c + 16));
      const __m256 s0 = _mm256_set1_ps(scales[c >> shift]);
      const __m256 s1 = _mm256_set1_ps(scales[(c + 16) >> shift]);
      // Columns c + 0..7, 8..15 (scale s0), 16..23, 24..31 (scale s1).
      __m256 w[4] = {
          _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0))),
          _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8)))),
          _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1))),
          _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))))};
      if (kMins) {  // a separate rounding, never fused with the product
        const __m256 m0 = _mm256_set1_ps(mins[c >> shift]);
        const __m256 m1 = _mm256_set1_ps(mins[(c + 16) >> shift]);
        w[0] = _mm256_sub_ps(w[0], m0);
        w[1] = _mm256_sub_ps(w[1], m0);
        w[2] = _mm256_sub_ps(w[2], m1);
        w[3] = _mm256_sub_ps(w[3], m1);
      }
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        const float* x = a.x + i * a.ldx + c;
        acc0[i] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), acc0[i]);
        acc1[i] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), acc1[i]);
        acc0[i] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), acc0[i]);
        acc1[i] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), acc1[i]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      const __m256 v = _mm256_add_ps(acc0[i], acc1[i]);
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      s = _mm_add_ps(s, _mm_movehl_ps(s, s));
      s = _mm_add_ss(s, _mm_movehdup_ps(s));
      a.y[i * a.ldy + r] = _mm_cvtss_f32(s) + (a.bias != nullptr ? a.bias[r] : 0.0f);
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

void q8_gemv_avx2(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  if (a.mins != nullptr) return dispatch<true>(a, r_begin, r_end);
  return dispatch<false>(a, r_begin, r_end);
}

}  // namespace tierserve

// The AVX2 Q4 GEMV (cpu_kernels.h). Per row of w, each group's 32-column blocks are widened
// once (nibbles -> u32 -> f32, 8 lanes) and multiplied into every row of x; the group's lane
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

// The nibble stream (rows are contiguous) is prefetched this far ahead into L1 in software, as
// the AVX-512 kernel does (its hardware prefetchers alone leave the kernel waiting on DRAM).
constexpr int64_t kPrefetchBytes = 2048;

// Every loop over the M rows of x is unrolled: GCC otherwise keeps the accumulator arrays in
// memory for M > 2 (measured 3.3x the m = 1 time at m = 4).
template <int M>
void rows(const Q4GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  const __m128i low_mask = _mm_set1_epi8(0x0f);
  for (int64_t r = r_begin; r < r_end; ++r) {
    const uint8_t* row = a.nibbles + r * (a.k / 2);
    __m256 acc[M];
    float acc_zero[M];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      acc[i] = _mm256_setzero_ps();
      acc_zero[i] = 0.0f;
    }
    for (int64_t g = 0; g < groups; ++g) {
      __m256 dot[M];
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) dot[i] = _mm256_setzero_ps();
      for (int64_t c = g * a.group_size; c < (g + 1) * a.group_size; c += 32) {
        if ((c & 127) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(row + c / 2 + kPrefetchBytes), _MM_HINT_T0);
        }
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2));
        const __m128i lo = _mm_and_si128(raw, low_mask);
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low_mask);
        // Columns c + 0..7, 8..15 (low nibbles), then c + 16..23, 24..31 (high nibbles).
        const __m256 q[4] = {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                             _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)))};
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          const float* x = a.x + i * a.ldx + c;
          for (int part = 0; part < 4; ++part) {
            dot[i] = _mm256_fmadd_ps(q[part], _mm256_loadu_ps(x + 8 * part), dot[i]);
          }
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
      const __m256 sv = _mm256_set1_ps(s);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        acc[i] = _mm256_fmadd_ps(sv, dot[i], acc[i]);
        acc_zero[i] += sz * a.xsum[i * groups + g];
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      const __m128 half =
          _mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps(acc[i], 1));
      const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
      const float sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
      a.y[i * a.ldy + r] = sum - acc_zero[i] + (a.bias != nullptr ? a.bias[r] : 0.0f);
    }
  }
}

}  // namespace

void q4_gemv_avx2(const Q4GemvArgs& a, int64_t r_begin, int64_t r_end) {
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

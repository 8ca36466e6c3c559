// The reference Q4 GEMV (cpu_kernels.h): one f32 partial sum per group, in column order.
#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {

void q4_gemv_scalar(const Q4GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  for (int64_t r = r_begin; r < r_end; ++r) {
    const uint8_t* row = a.nibbles + r * (a.k / 2);
    for (int32_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * a.ldx;
      float acc = 0.0f, acc_zero = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        float dot = 0.0f;
        for (int64_t c = g * a.group_size; c < (g + 1) * a.group_size; c += 32) {
          const uint8_t* block = row + c / 2;
          for (int j = 0; j < 16; ++j) dot += static_cast<float>(block[j] & 0xf) * x[c + j];
          for (int j = 0; j < 16; ++j) dot += static_cast<float>(block[j] >> 4) * x[c + 16 + j];
        }
        // w = s * q - sz over the group.
        const int64_t at = r * groups + g;
        float s, sz;
        if (a.supers != nullptr) {
          s = f16_to_f32(a.supers[2 * (at / 8)]) * static_cast<float>(a.sub_scales[at]);
          sz = f16_to_f32(a.supers[2 * (at / 8) + 1]) * static_cast<float>(a.zeros[at]);
        } else {
          s = f16_to_f32(a.scales[at]);
          sz = s * static_cast<float>(a.zeros[at]);
        }
        acc += s * dot;
        acc_zero += sz * a.xsum[i * groups + g];
      }
      a.y[i * a.ldy + r] = acc - acc_zero + (a.bias != nullptr ? a.bias[r] : 0.0f);
    }
  }
}

}  // namespace tierserve

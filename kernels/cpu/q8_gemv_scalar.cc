// The reference Q8 GEMV (cpu_kernels.h): each weight formed in f32 (scale * q, then - min), summed
// in column order.
#include "kernels/cpu/cpu_kernels.h"

namespace tierserve {

void q8_gemv_scalar(const Q8GemvArgs& a, int64_t r_begin, int64_t r_end) {
  const int64_t groups = a.k / a.group_size;
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int8_t* row = a.values + r * a.k;
    const float* scales = a.scales + r * groups;
    const float* mins = a.mins != nullptr ? a.mins + r * groups : nullptr;
    for (int32_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * a.ldx;
      float acc = 0.0f;
      for (int64_t c = 0; c < a.k; ++c) {
        float w = scales[c / a.group_size] * static_cast<float>(row[c]);
        if (mins != nullptr) w -= mins[c / a.group_size];
        acc += w * x[c];
      }
      a.y[i * a.ldy + r] = acc + (a.bias != nullptr ? a.bias[r] : 0.0f);
    }
  }
}

}  // namespace tierserve

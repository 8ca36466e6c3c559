#include "kernels/q8_weight.h"

#include <string>

#include "common/check.h"

namespace tierserve {

Result<Q8Layout> Q8Layout::make(int64_t n, int64_t k, int32_t group_size, bool with_mins) {
  if (n <= 0 || k <= 0 || (group_size != 16 && group_size != 32) || k % 32 != 0) {
    return invalid_argument("an 8-bit weight [" + std::to_string(n) + ", " + std::to_string(k) +
                            "] with group size " + std::to_string(group_size) +
                            " (groups of 16 or 32 columns, rows a multiple of 32)");
  }
  Q8Layout l;
  l.n = n;
  l.k = k;
  l.group_size = group_size;
  l.with_mins = with_mins;
  const uint64_t un = static_cast<uint64_t>(n), uk = static_cast<uint64_t>(k);
  const uint64_t section = un * (uk / static_cast<uint64_t>(group_size)) * 4;  // scales or mins
  l.scales_offset = (un * uk + 63) / 64 * 64;
  l.mins_offset = with_mins ? (l.scales_offset + section + 63) / 64 * 64 : 0;
  l.bytes = ((with_mins ? l.mins_offset : l.scales_offset) + section + 63) / 64 * 64;
  return l;
}

Q8Layout Q8Layout::of(const TensorView& w) {
  TS_CHECK(w.dtype == DType::kQ8 && w.ndim == 2) << "not a q8 weight: " << w.debug_string();
  auto l = make(w.shape[0], w.shape[1], w.group_size, w.with_mins);
  TS_CHECK(l.is_ok()) << l.status().to_string();
  return l.value();
}

TensorView q8_view(void* data, const Q8Layout& layout, DeviceKind device) {
  TensorView v;
  v.data = data;
  v.dtype = DType::kQ8;
  v.ndim = 2;
  v.shape = {layout.n, layout.k, 0, 0};
  v.strides = {layout.k, 1, 0, 0};
  v.device = device;
  v.group_size = layout.group_size;
  v.with_mins = layout.with_mins;
  return v;
}

void dequantize_q8_rows(const void* blob, const Q8Layout& l, int64_t row_begin, int64_t rows,
                        float* out) {
  const uint8_t* base = static_cast<const uint8_t*>(blob);
  const int8_t* values = reinterpret_cast<const int8_t*>(base);
  const float* scales = reinterpret_cast<const float*>(base + l.scales_offset);
  const float* mins = l.with_mins ? reinterpret_cast<const float*>(base + l.mins_offset) : nullptr;
  const int64_t groups = l.groups();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = row_begin + i;
    for (int64_t c = 0; c < l.k; ++c) {
      const int64_t g = r * groups + c / l.group_size;
      const float product = scales[g] * static_cast<float>(values[r * l.k + c]);
      out[i * l.k + c] = mins != nullptr ? product - mins[g] : product;
    }
  }
}

}  // namespace tierserve

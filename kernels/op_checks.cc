#include "kernels/op_checks.h"

namespace tierserve {

std::string describe(const TensorView& t) {
  std::string s(dtype_name(t.dtype));
  std::string strides;
  s += "[";
  for (int i = 0; i < t.ndim; ++i) {
    const std::string sep = i > 0 ? ", " : "";
    s += sep + std::to_string(t.shape[static_cast<size_t>(i)]);
    strides += sep + std::to_string(t.strides[static_cast<size_t>(i)]);
  }
  s += "] strides [" + strides + "]";
  if (t.device != DeviceKind::kCpu) s += " (device memory)";
  return s;
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

void check_rows(const TensorView& t, DType dtype, int ndim, const char* what, DeviceKind device) {
  TS_CHECK(t.device == device && t.dtype == dtype && t.ndim == ndim)
      << what << ": expected " << dtype_name(dtype) << " with " << ndim << " dims "
      << (device == DeviceKind::kCpu ? "on the host" : "on the device") << ", got " << describe(t);
  const int inner = ndim - 1;
  TS_CHECK(t.stride(inner) == 1 || t.shape[static_cast<size_t>(inner)] <= 1)
      << what << ": innermost stride must be 1, got " << describe(t);
  for (int i = 0; i < ndim; ++i) {
    TS_CHECK(t.shape[static_cast<size_t>(i)] >= 0 && t.stride(i) >= 0)
        << what << ": negative extent or stride in " << describe(t);
  }
  TS_CHECK(t.data != nullptr || t.numel() == 0) << what << ": null data";
}

void check_vector(const TensorView& t, int64_t n, const char* what, DeviceKind device) {
  TS_CHECK(is_float_dtype(t.dtype)) << what << ": expected f32, bf16 or f16, got " << describe(t);
  check_rows(t, t.dtype, 1, what, device);
  TS_CHECK_EQ(t.dim(0), n) << what << ": " << describe(t);
}

}  // namespace tierserve

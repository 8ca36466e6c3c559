#include "kernels/tensor.h"

namespace tierserve {

TensorView TensorView::contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                  DeviceKind device) {
  TS_CHECK(shape.size() <= kMaxDims) << "too many dimensions: " << shape.size();
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int32_t>(shape.size());
  size_t i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[static_cast<size_t>(d)] = stride;
    stride *= t.shape[static_cast<size_t>(d)];
  }
  return t;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[static_cast<size_t>(i)];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    size_t i = static_cast<size_t>(d);
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

TensorView TensorView::rows(int64_t begin, int64_t end) const {
  TS_CHECK(ndim >= 1 && begin >= 0 && begin <= end && end <= shape[0])
      << "rows [" << begin << ", " << end << ") of " << debug_string();
  TensorView t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin * strides[0]) * dtype_size(dtype);
  t.shape[0] = end - begin;
  return t;
}

TensorView TensorView::reshape(std::initializer_list<int64_t> new_shape) const {
  TS_CHECK(is_contiguous()) << "reshape of a non-contiguous " << debug_string();
  TensorView t = contiguous(data, dtype, new_shape, device);
  TS_CHECK_EQ(t.numel(), numel()) << "reshape of " << debug_string();
  return t;
}

std::string TensorView::debug_string() const {
  std::string s(dtype_name(dtype));
  s += "[";
  for (int i = 0; i < ndim; ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[static_cast<size_t>(i)]);
  }
  return s + "]";
}

}  // namespace tierserve

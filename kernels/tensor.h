// TensorView: a non-owning view of a strided tensor in some tier's memory. Pools and loaders own
// the bytes; a view is valid as long as its owner keeps them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/check.h"
#include "common/dtype.h"

namespace tierserve {

// Where a pointer lives. kCpu memory is directly addressable by the host.
enum class DeviceKind : uint8_t { kCpu, kCuda };

inline constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;                     // first element; not owned
  DType dtype = DType::kF32;                // element type
  int32_t ndim = 0;                         // number of dimensions, 0..kMaxDims
  std::array<int64_t, kMaxDims> shape{};    // extent of each dimension
  std::array<int64_t, kMaxDims> strides{};  // distance between neighbours, in elements
  DeviceKind device = DeviceKind::kCpu;     // memory the data pointer refers to
  // A gemm weight [n, k] stored in its backend's own layout (Backend::pack_weight), not as the
  // row-major matrix that shape and strides describe: only that backend's gemm may read it.
  bool packed = false;
  // A kQ4 weight (kernels/q4_weight.h): input columns per scale group, whether its columns are
  // permuted (act order), and whether its scales are in the k-quant form. Unused otherwise.
  int32_t group_size = 0;
  bool act_order = false;
  bool k_quant = false;
  // A kQ8 weight (kernels/q8_weight.h) with a mins section; group_size is its too.
  bool with_mins = false;

  // A row-major contiguous view of `shape`.
  static TensorView contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                               DeviceKind device = DeviceKind::kCpu);

  int64_t dim(int i) const {
    TS_CHECK(i >= 0 && i < ndim) << "dim " << i << " of a " << ndim << "-d tensor";
    return shape[static_cast<size_t>(i)];
  }
  int64_t stride(int i) const { return strides[static_cast<size_t>(i)]; }
  int64_t numel() const;
  // Bytes spanned by a contiguous view (numel * element size).
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool is_contiguous() const;
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // A view of rows [begin, end) of dimension 0.
  TensorView rows(int64_t begin, int64_t end) const;
  // The same elements, viewed with another contiguous shape (requires is_contiguous()).
  TensorView reshape(std::initializer_list<int64_t> shape) const;
  // "bf16[896, 4864]"
  std::string debug_string() const;
};

}  // namespace tierserve

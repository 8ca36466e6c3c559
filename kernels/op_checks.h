// Shape checks shared by the backends' ops.
#pragma once

#include <cstdint>
#include <string>

#include "common/check.h"
#include "kernels/tensor.h"

namespace tierserve {

// "bf16[896, 4864] strides [4864, 1]".
std::string describe(const TensorView& t);
// Whether `dtype` is one of f32, bf16, f16.
bool is_float_dtype(DType dtype);

// Aborts unless `t` is a tensor of `dtype` in `device`'s memory with `ndim` dimensions and unit
// innermost stride (rows, and heads for 3-d tensors, may have any non-negative stride).
void check_rows(const TensorView& t, DType dtype, int ndim, const char* what,
                DeviceKind device = DeviceKind::kCpu);
// As check_rows, for a 1-d float vector of any float dtype and `n` elements.
void check_vector(const TensorView& t, int64_t n, const char* what,
                  DeviceKind device = DeviceKind::kCpu);

}  // namespace tierserve

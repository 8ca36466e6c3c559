// The kernels' element type (cuda_ops.h's ElemType) of a DType, for the C++ side of the CUDA
// backend (the .cu files see no DType).
#pragma once

#include "common/dtype.h"
#include "kernels/cuda/cuda_ops.h"

namespace tierserve::cuda {

// kF32 for f32 (and for anything that is not a 16-bit float).
inline ElemType elem_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return ElemType::kBF16;
    case DType::kF16:
      return ElemType::kF16;
    default:
      return ElemType::kF32;
  }
}

}  // namespace tierserve::cuda

// Q8 weights (W8A16): a gemm weight [n, k] stored as 8-bit integers with one f32 scale per group
// of `group_size` input columns, and optionally one f32 min per group, dequantized inside the
// gemm:
//
//   w[r, c] = scale[r, g] * q[r, c]                  (one f32 product, as llama.cpp rounds it)
//   w[r, c] = scale[r, g] * q[r, c] - min[r, g]      (with mins: product, then difference, each
//                                                     rounded to f32; g = c / group_size)
//
// GGUF's types whose elements are an integer times a scale (Q8_0, Q5_0, Q3_K, Q6_K, IQ4_NL,
// IQ4_XS) or that and a min (Q4_1, Q5_1, Q2_K, Q5_K: their mins negated where ggml adds them)
// are repacked into this one layout at load, exactly: a K-quant's d * scale is exact in f32. It
// then moves between tiers as plain bytes: 8 bits a weight plus 32 bits a group (10 bits a weight
// for Q6_K, 9 for Q8_0), 64 with mins (10 for Q5_K, 12 for Q2_K), against 16 for bf16.
//
// One weight is one blob of these sections, each 64-byte aligned:
//   values  [n][k] i8
//   scales  [n][k / group_size] f32
//   mins    [n][k / group_size] f32   (only with mins)
// A TensorView of it has dtype kQ8, shape [n, k], group_size set, and with_mins.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace tierserve {

// Where each section of a Q8 blob lies.
struct Q8Layout {
  int64_t n = 0, k = 0;        // rows (outputs) and columns (inputs)
  int32_t group_size = 0;      // 16 or 32; k is a multiple of 32
  bool with_mins = false;      // the blob has a mins section
  uint64_t scales_offset = 0;  // bytes from the blob's start
  uint64_t mins_offset = 0;    // with mins
  uint64_t bytes = 0;          // the whole blob

  int64_t groups() const { return k / group_size; }
  // Checks the shape (kInvalidArgument naming it) and computes the offsets.
  static Result<Q8Layout> make(int64_t n, int64_t k, int32_t group_size, bool with_mins = false);
  // The layout of a kQ8 view.
  static Q8Layout of(const TensorView& w);
};

// A kQ8 view of a blob at `data`.
TensorView q8_view(void* data, const Q8Layout& layout, DeviceKind device = DeviceKind::kCpu);

// out[i, c] = w[row_begin + i, c] as f32 for i < rows (row stride k). `blob` is host memory.
void dequantize_q8_rows(const void* blob, const Q8Layout& layout, int64_t row_begin, int64_t rows,
                        float* out);

}  // namespace tierserve

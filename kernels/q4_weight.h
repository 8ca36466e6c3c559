// Q4 weights (W4A16): a gemm weight [n, k] stored as 4-bit integers with one f16 scale and one
// integer zero per group of `group_size` input columns, dequantized inside the gemm. AWQ, GPTQ
// and GGUF Q4_0 checkpoints are repacked into this one layout at load; it then moves between
// tiers as plain bytes, a quarter of bf16's (plus 3 bytes per group).
//
//   w[r, c] = (q[r, c] - zero[r, g]) * scale[r, g],   g = c / group_size
//
// over the columns as stored. An act-order GPTQ checkpoint (desc_act) has its input columns
// permuted so that groups are contiguous: stored column c is input column perm[c], and the gemm
// reads x[:, perm[c]].
//
// One weight is one blob of these sections, each 64-byte aligned, in this order:
//   nibbles  [n][k / 2] u8   per row, per block of 32 columns, 16 bytes: byte j holds column
//                            32b + j in its low nibble and column 32b + 16 + j in its high one
//   scales   [n][groups] f16
//   zeros    [n][groups] u8  0..16 (GPTQ v1 stores zero - 1, so 16 occurs)
//   perm     [k] i32         act-order only
// A TensorView of it has dtype kQ4, shape [n, k], and group_size / act_order set.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace tierserve {

// Where each section of a Q4 blob lies.
struct Q4Layout {
  int64_t n = 0, k = 0;    // rows (outputs) and columns (inputs)
  int32_t group_size = 0;  // a multiple of 32 that divides k
  bool act_order = false;  // the perm section is present
  uint64_t scales_offset = 0, zeros_offset = 0, perm_offset = 0;  // bytes from the blob's start
  uint64_t bytes = 0;                                             // the whole blob

  int64_t groups() const { return k / group_size; }
  // Checks the shape (kInvalidArgument naming it) and computes the offsets.
  static Result<Q4Layout> make(int64_t n, int64_t k, int32_t group_size, bool act_order);
  // The layout of a kQ4 view.
  static Q4Layout of(const TensorView& w);
};

// A kQ4 view of a blob at `data`.
TensorView q4_view(void* data, const Q4Layout& layout, DeviceKind device = DeviceKind::kCpu);

// The checkpoint formats, as 4-bit integer matrices in natural [n][k] order before repacking.
struct Q4Source {
  int64_t n = 0, k = 0;
  int32_t group_size = 0;
  std::vector<uint8_t> q;       // [n][k] values 0..15
  std::vector<uint16_t> scale;  // [n][groups] f16 bits
  std::vector<uint8_t> zero;    // [n][groups] 0..16
  std::vector<int32_t> perm;    // [k] or empty: stored column c is input column perm[c]
};

// Unpacks AutoAWQ's GEMM layout: qweight int32 [k, n / 8] and qzeros int32 [k / g, n / 8] with
// eight outputs per int32 in nibble order [0, 2, 4, 6, 1, 3, 5, 7] (output 8j + order[i] in bits
// 4i..4i+3), scales f16 [k / g, n]. Errors name `name` and the shape that disagrees.
Result<Q4Source> unpack_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                            int64_t n, int64_t k, int32_t group_size, const std::string& name);

// Unpacks GPTQ: qweight int32 [k / 8, n] with input 8j + i in bits 4i..4i+3, qzeros int32
// [groups, n / 8] holding zero - zero_offset in the same order along n (checkpoint format gptq,
// v1, stores zero - 1: zero_offset 1; gptq_v2: 0), scales f16
// [groups, n], g_idx int32 [k] (the group of each input; null = c / group_size). An act-order
// g_idx becomes a permutation sorting inputs by group; each group must then hold group_size
// inputs.
Result<Q4Source> unpack_gptq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                             const int32_t* g_idx, int64_t n, int64_t k, int32_t group_size,
                             int32_t zero_offset, const std::string& name);

// Writes `src` in the blob layout at `dst` (layout.bytes bytes, host memory).
void pack_q4(const Q4Source& src, const Q4Layout& layout, void* dst);

// out[i, c] = w[row_begin + i, c] as f32 for i < rows, in the stored column order (row stride
// k): (q - zero) * scale, exact in f32. `blob` is host memory.
void dequantize_q4_rows(const void* blob, const Q4Layout& layout, int64_t row_begin, int64_t rows,
                        float* out);

// w[r, :] for rows [0, n) as f32 in natural input order (perm undone): the reference a fused
// kernel is tested against. `blob` is host memory.
std::vector<float> dequantize_q4(const void* blob, const Q4Layout& layout);

}  // namespace tierserve

// Q4 weights (W4A16): a gemm weight [n, k] stored as 4-bit integers, with scales per group of
// `group_size` input columns, dequantized inside the gemm. AWQ, GPTQ and GGUF Q4_0 / Q4_K
// checkpoints are repacked into this one layout at load; it then moves between tiers as plain
// bytes, a quarter of bf16's (plus 3 bytes per group, or 2.5 bytes per 32 columns for Q4_K).
//
// The scales take one of two forms, g = c / group_size:
//   zero form:     w[r, c] = (q[r, c] - zero[r, g]) * scale[r, g]
//   k-quant form:  w[r, c] = (d[r, g / 8] * scale[r, g]) * q[r, c] - dmin[r, g / 8] * zero[r, g]
// over the columns as stored. The k-quant form is GGUF's Q4_K: groups of 32 columns, 6-bit scales
// and mins under an f16 d and dmin per super-block of 8 groups; both products are f32, as
// llama.cpp's dequantize_row_q4_K computes them.
//
// An act-order GPTQ checkpoint (desc_act) has its input columns permuted so that groups are
// contiguous: stored column c is input column perm[c], and the gemm reads x[:, perm[c]].
//
// One weight is one blob of these sections, each 64-byte aligned, in this order:
//   nibbles  [n][k / 2] u8   per row, per block of 32 columns, 16 bytes: byte j holds column
//                            32b + j in its low nibble and column 32b + 16 + j in its high one
//   scales   [n][groups] f16 (zero form) or u8 0..63 (k-quant form)
//   zeros    [n][groups] u8  0..16 (GPTQ v1 stores zero - 1, so 16 occurs); k-quant: 0..63
//   supers   [n][groups / 8][2] f16   d, dmin: k-quant form only
//   perm     [k] i32         act-order only (never with the k-quant form)
// A TensorView of it has dtype kQ4, shape [n, k], and group_size / act_order / k_quant set.
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
  bool k_quant = false;    // the scales are in the k-quant form; the supers section is present
  // Bytes from the blob's start.
  uint64_t scales_offset = 0, zeros_offset = 0, supers_offset = 0, perm_offset = 0;
  uint64_t bytes = 0;  // the whole blob

  int64_t groups() const { return k / group_size; }
  // Checks the shape (kInvalidArgument naming it) and computes the offsets. The k-quant form
  // takes groups of 32 and rows of a multiple of 256 columns, without act order.
  static Result<Q4Layout> make(int64_t n, int64_t k, int32_t group_size, bool act_order,
                               bool k_quant = false);
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
  std::vector<uint16_t> scale;  // [n][groups] f16 bits (zero form)
  std::vector<uint8_t> zero;    // [n][groups] 0..16 (zero form) or the 6-bit min (k-quant form)
  std::vector<int32_t> perm;    // [k] or empty: stored column c is input column perm[c]
  // The k-quant form (GGUF Q4_K): non-empty sub_scale replaces scale.
  std::vector<uint8_t> sub_scale;  // [n][groups] 0..63
  std::vector<uint16_t> supers;    // [n][groups / 8][2] f16 bits: d, dmin
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
// k): (q - zero) * scale, exact in f32, or d * scale * q - dmin * zero with f32 products (as
// llama.cpp). `blob` is host memory.
void dequantize_q4_rows(const void* blob, const Q4Layout& layout, int64_t row_begin, int64_t rows,
                        float* out);

// w[r, :] for rows [0, n) as f32 in natural input order (perm undone): the reference a fused
// kernel is tested against. `blob` is host memory.
std::vector<float> dequantize_q4(const void* blob, const Q4Layout& layout);

}  // namespace tierserve

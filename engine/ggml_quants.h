// ggml's tensor types as GGUF files store them: the block layout of each type, and conversion to
// f32 of the types this engine loads (see kGgmlDequantizableTypes), following ggml's reference
// dequantize_row_* definitions (ggml-quants.c) exactly, and, for the types whose every element is
// an 8-bit integer times a per-group scale, that integer form.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tierserve {

// ggml's tensor types, with ggml's numeric ids (ids 4, 5, 31-33 and 36-38 were removed from ggml
// and are unknown here). Only some have a dequantizer (ggml_type_info(...)->dequantize).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

// Layout of one ggml type: data is a sequence of blocks, each holding `block_size` consecutive
// elements of a row in `block_bytes` bytes.
struct GgmlTypeInfo {
  GgmlType type;          // the type
  std::string_view name;  // ggml's name, e.g. "Q4_K"
  int64_t block_size;     // elements per block: 1 for F32/F16/BF16, 32 for Q8_0/Q4_0, 256 for K
  int64_t block_bytes;    // bytes per block, e.g. 34 for Q8_0, 144 for Q4_K, 210 for Q6_K
  bool dequantize;        // dequantize_gguf_row() supports it (kGgmlDequantizableTypes)
  int64_t q8_group;       // > 0: every element is scale * q (- min) with an int8 q and an f32
                          // scale (and min) per q8_group elements (ggml_block_to_q8)
  bool q8_mins;           // with a min per group
};

// The layout of ggml type id `id`, or null for an id ggml does not define (or removed).
const GgmlTypeInfo* ggml_type_info(uint32_t id);
inline const GgmlTypeInfo* ggml_type_info(GgmlType type) {
  return ggml_type_info(static_cast<uint32_t>(type));
}
// ggml's name of `type` ("Q4_K"), or "unknown type <id>".
std::string ggml_type_name(GgmlType type);

// Converts `n` consecutive elements of `type` starting at `src` (the start of a block) to f32 in
// `dst`, exactly as ggml's dequantize_row_* reference functions do. Reads n / block_size *
// block_bytes bytes from `src` (unaligned reads are fine) and writes n floats.
// Errors: kUnimplemented for a type without a dequantizer (naming it), kInvalidArgument when `n`
// is negative or not a multiple of the type's block size.
Status dequantize_gguf_row(GgmlType type, const uint8_t* src, int64_t n, float* dst);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block from its 12 packed bytes:
// sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 in the
// nibbles of bytes 8-11 with their top 2 bits in the high bits of bytes 0-7. (A block_q4_K is
// {f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]}.)
void q4_k_scale_min(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min);

// One block of a type with q8_group > 0 (every quantized type dequantize_gguf_row() supports) as
// integers, scales and mins: writes block_size int8 values to `q`, and block_size / q8_group
// scales to `scales` and, for a type with q8_mins, as many mins to `mins`, such that
//   scales[g] * q[j]              (one f32 product), or
//   scales[g] * q[j] - mins[g]    (the product, then the difference, each rounded to f32)
// with g = j / q8_group is exactly what ggml's dequantize_row_* gives for element j. Each scale
// and min is an f16 times a small integer, exact in f32, as ggml computes it; where ggml adds a
// min (Q4_1, Q5_1), `mins` holds it negated.
void ggml_block_to_q8(GgmlType type, const uint8_t* block, int8_t* q, float* scales, float* mins);

// The types dequantize_gguf_row() supports, for error messages.
inline constexpr const char* kGgmlDequantizableTypes =
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS";

}  // namespace tierserve

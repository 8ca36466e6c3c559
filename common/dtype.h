// Element types of tensors and their conversions to and from f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tierserve {

// kQ4 and kQ8 are 4-bit and 8-bit gemm weight blobs (kernels/q4_weight.h, kernels/q8_weight.h):
// they have no element size.
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8, kQ4, kQ8 };

// Bytes per element; aborts for kQ4 and kQ8, whose blobs are sized by their layouts.
size_t dtype_size(DType dtype);
// "f32", "f16", "bf16", "i32", "i64", "u8", "q4", "q8".
std::string_view dtype_name(DType dtype);
// Parses the names above and the usual synonyms ("float32", "bfloat16", "half", "float").
bool parse_dtype(std::string_view name, DType* out);

// bf16: the upper 16 bits of an f32. Conversion to bf16 rounds to nearest even, as PyTorch does;
// NaN stays NaN.
inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE 754 binary16, round to nearest even, with subnormals, infinities and NaN.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements between any two of f32, f16 and bf16 (src and dst must not overlap).
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n);

}  // namespace tierserve

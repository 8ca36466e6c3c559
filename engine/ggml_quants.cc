#include "engine/ggml_quants.h"

#include <cstring>

#include "common/check.h"
#include "common/dtype.h"

namespace tierserve {
namespace {

// ---- Type table ------------------------------------------------------------------------------

// Block layouts from ggml (ggml-common.h; gguf-py's GGML_QUANT_SIZES).
constexpr int64_t kQK = 256;  // elements per K-quant super-block
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, true},
    {GgmlType::kF16, "F16", 1, 2, true},
    {GgmlType::kQ4_0, "Q4_0", 32, 2 + 16, true},
    {GgmlType::kQ4_1, "Q4_1", 32, 2 + 2 + 16, false},
    {GgmlType::kQ5_0, "Q5_0", 32, 2 + 4 + 16, false},
    {GgmlType::kQ5_1, "Q5_1", 32, 2 + 2 + 4 + 16, false},
    {GgmlType::kQ8_0, "Q8_0", 32, 2 + 32, true},
    {GgmlType::kQ8_1, "Q8_1", 32, 4 + 4 + 32, false},
    {GgmlType::kQ2_K, "Q2_K", kQK, 2 + 2 + kQK / 16 + kQK / 4, false},
    {GgmlType::kQ3_K, "Q3_K", kQK, 2 + kQK / 4 + kQK / 8 + 12, false},
    {GgmlType::kQ4_K, "Q4_K", kQK, 2 + 2 + 12 + kQK / 2, true},
    {GgmlType::kQ5_K, "Q5_K", kQK, 2 + 2 + 12 + kQK / 8 + kQK / 2, true},
    {GgmlType::kQ6_K, "Q6_K", kQK, kQK / 2 + kQK / 4 + kQK / 16 + 2, true},
    {GgmlType::kQ8_K, "Q8_K", kQK, 4 + kQK + kQK / 8, false},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", kQK, 2 + kQK / 4, false},
    {GgmlType::kIQ2_XS, "IQ2_XS", kQK, 2 + kQK / 4 + kQK / 32, false},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", kQK, 2 + kQK / 4 + kQK / 8, false},
    {GgmlType::kIQ1_S, "IQ1_S", kQK, 2 + kQK / 8 + kQK / 16, false},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 2 + 16, false},
    {GgmlType::kIQ3_S, "IQ3_S", kQK, 2 + kQK / 4 + kQK / 8 + kQK / 32 + 4, false},
    {GgmlType::kIQ2_S, "IQ2_S", kQK, 2 + kQK / 4 + kQK / 16, false},
    {GgmlType::kIQ4_XS, "IQ4_XS", kQK, 2 + 2 + kQK / 2 + kQK / 64, false},
    {GgmlType::kI8, "I8", 1, 1, false},
    {GgmlType::kI16, "I16", 1, 2, false},
    {GgmlType::kI32, "I32", 1, 4, false},
    {GgmlType::kI64, "I64", 1, 8, false},
    {GgmlType::kF64, "F64", 1, 8, false},
    {GgmlType::kIQ1_M, "IQ1_M", kQK, kQK / 8 + kQK / 16 + kQK / 32, false},
    {GgmlType::kBF16, "BF16", 1, 2, true},
    {GgmlType::kTQ1_0, "TQ1_0", kQK, 2 + 4 * 13, false},
    {GgmlType::kTQ2_0, "TQ2_0", kQK, 2 + 64, false},
    {GgmlType::kMXFP4, "MXFP4", 32, 1 + 16, false},
};

// ---- Dequantization (ggml-quants.c's dequantize_row_* reference definitions) ------------------

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// block_q8_0 {f16 d; int8 qs[32]}: x[i] = qs[i] * d.
void dequantize_q8_0(const uint8_t* block, float* y) {
  const float d = load_f16(block);
  const uint8_t* qs = block + 2;
  for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(static_cast<int8_t>(qs[i])) * d;
}

// block_q4_0 {f16 d; uint8 qs[16]}: low nibbles are elements 0..15, high nibbles 16..31;
// x = (q - 8) * d.
void dequantize_q4_0(const uint8_t* block, float* y) {
  const float d = load_f16(block);
  const uint8_t* qs = block + 2;
  for (int i = 0; i < 16; ++i) {
    y[i] = static_cast<float>((qs[i] & 0x0F) - 8) * d;
    y[i + 16] = static_cast<float>((qs[i] >> 4) - 8) * d;
  }
}

// block_q4_K {f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]}, 256 elements in 8 sub-blocks
// of 32: x = d * scale_j * q - dmin * min_j. Each group of 32 bytes of qs holds two sub-blocks:
// low nibbles the first, high nibbles the second.
void dequantize_q4_k(const uint8_t* block, float* y) {
  const float d = load_f16(block);
  const float dmin = load_f16(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qs = block + 16;
  for (int group = 0; group < 4; ++group, qs += 32, y += 64) {
    uint8_t scale = 0;
    uint8_t min = 0;
    q4_k_scale_min(2 * group, scales, &scale, &min);
    const float d1 = d * static_cast<float>(scale);
    const float m1 = dmin * static_cast<float>(min);
    q4_k_scale_min(2 * group + 1, scales, &scale, &min);
    const float d2 = d * static_cast<float>(scale);
    const float m2 = dmin * static_cast<float>(min);
    for (int l = 0; l < 32; ++l) {
      // Product and difference in separate statements: rounded twice, as ggml's reference, never
      // contracted into one fused multiply-add.
      const float lo = d1 * static_cast<float>(qs[l] & 0x0F);
      y[l] = lo - m1;
      const float hi = d2 * static_cast<float>(qs[l] >> 4);
      y[l + 32] = hi - m2;
    }
  }
}

// block_q5_K {f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}: Q4_K's layout
// with a fifth bit per element: bit j of qh[l] belongs to element l of sub-block j (in qs chunk
// j / 2, low nibbles for even j); x = d * scale_j * q - dmin * min_j.
void dequantize_q5_k(const uint8_t* block, float* y) {
  const float d = load_f16(block);
  const float dmin = load_f16(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qh = block + 16;
  const uint8_t* qs = block + 48;
  for (int j = 0; j < 8; ++j) {
    uint8_t scale = 0;
    uint8_t min = 0;
    q4_k_scale_min(j, scales, &scale, &min);
    const float d1 = d * static_cast<float>(scale);
    const float m1 = dmin * static_cast<float>(min);
    const uint8_t* q = qs + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) {
      const int low = j % 2 == 0 ? q[l] & 0x0F : q[l] >> 4;
      const int high = (qh[l] >> j) & 1;
      // Rounded twice, as ggml's reference (see dequantize_q4_k).
      const float prod = d1 * static_cast<float>(low + 16 * high);
      y[32 * j + l] = prod - m1;
    }
  }
}

// block_q6_K {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}, 256 elements: a 6-bit q is
// 4 low bits from ql and 2 high bits from qh; x = d * scales[i / 16] * (q - 32). Each half of
// 128 elements uses 64 bytes of ql, 32 of qh and 8 scales.
void dequantize_q6_k(const uint8_t* block, float* y) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(block + 192);
  const float d = load_f16(block + 208);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

}  // namespace

void q4_k_scale_min(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const GgmlTypeInfo& info : kGgmlTypes) {
    if (static_cast<uint32_t>(info.type) == id) return &info;
  }
  return nullptr;
}

std::string ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  if (info == nullptr) return "unknown type " + std::to_string(static_cast<uint32_t>(type));
  return std::string(info->name);
}

Status dequantize_gguf_row(GgmlType type, const uint8_t* src, int64_t n, float* dst) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  if (info == nullptr || !info->dequantize) {
    return unimplemented("cannot dequantize ggml type " + ggml_type_name(type) +
                         " (supported: " + kGgmlDequantizableTypes + ")");
  }
  if (n < 0 || n % info->block_size != 0) {
    return invalid_argument("cannot dequantize " + std::to_string(n) + " elements of " +
                            std::string(info->name) + ": not a multiple of its block size " +
                            std::to_string(info->block_size));
  }
  const int64_t blocks = n / info->block_size;
  const int64_t bytes = info->block_bytes;
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      break;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) dequantize_q8_0(src + b * bytes, dst + b * 32);
      break;
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < blocks; ++b) dequantize_q4_0(src + b * bytes, dst + b * 32);
      break;
    case GgmlType::kQ4_K:
      for (int64_t b = 0; b < blocks; ++b) dequantize_q4_k(src + b * bytes, dst + b * kQK);
      break;
    case GgmlType::kQ5_K:
      for (int64_t b = 0; b < blocks; ++b) dequantize_q5_k(src + b * bytes, dst + b * kQK);
      break;
    case GgmlType::kQ6_K:
      for (int64_t b = 0; b < blocks; ++b) dequantize_q6_k(src + b * bytes, dst + b * kQK);
      break;
    default:
      TS_CHECK(false) << "ggml type " << info->name << " is marked dequantizable but has no code";
  }
  return Status::ok();
}

}  // namespace tierserve

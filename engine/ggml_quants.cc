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
    {GgmlType::kF32, "F32", 1, 4, true, 0, false},
    {GgmlType::kF16, "F16", 1, 2, true, 0, false},
    {GgmlType::kQ4_0, "Q4_0", 32, 2 + 16, true, 32, false},
    {GgmlType::kQ4_1, "Q4_1", 32, 2 + 2 + 16, true, 32, true},
    {GgmlType::kQ5_0, "Q5_0", 32, 2 + 4 + 16, true, 32, false},
    {GgmlType::kQ5_1, "Q5_1", 32, 2 + 2 + 4 + 16, true, 32, true},
    {GgmlType::kQ8_0, "Q8_0", 32, 2 + 32, true, 32, false},
    {GgmlType::kQ8_1, "Q8_1", 32, 2 + 2 + 32, false, 0, false},  // {f16 d; f16 s; int8 qs[32]}
    {GgmlType::kQ2_K, "Q2_K", kQK, 2 + 2 + kQK / 16 + kQK / 4, true, 16, true},
    {GgmlType::kQ3_K, "Q3_K", kQK, 2 + kQK / 4 + kQK / 8 + 12, true, 16, false},
    {GgmlType::kQ4_K, "Q4_K", kQK, 2 + 2 + 12 + kQK / 2, true, 32, true},
    {GgmlType::kQ5_K, "Q5_K", kQK, 2 + 2 + 12 + kQK / 8 + kQK / 2, true, 32, true},
    {GgmlType::kQ6_K, "Q6_K", kQK, kQK / 2 + kQK / 4 + kQK / 16 + 2, true, 16, false},
    {GgmlType::kQ8_K, "Q8_K", kQK, 4 + kQK + kQK / 8, false, 0, false},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", kQK, 2 + kQK / 4, false, 0, false},
    {GgmlType::kIQ2_XS, "IQ2_XS", kQK, 2 + kQK / 4 + kQK / 32, false, 0, false},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", kQK, 2 + kQK / 4 + kQK / 8, false, 0, false},
    {GgmlType::kIQ1_S, "IQ1_S", kQK, 2 + kQK / 8 + kQK / 16, false, 0, false},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 2 + 16, true, 32, false},
    {GgmlType::kIQ3_S, "IQ3_S", kQK, 2 + kQK / 4 + kQK / 8 + kQK / 32 + 4, false, 0, false},
    {GgmlType::kIQ2_S, "IQ2_S", kQK, 2 + kQK / 4 + kQK / 16, false, 0, false},
    {GgmlType::kIQ4_XS, "IQ4_XS", kQK, 2 + 2 + kQK / 2 + kQK / 64, true, 32, false},
    {GgmlType::kI8, "I8", 1, 1, false, 0, false},
    {GgmlType::kI16, "I16", 1, 2, false, 0, false},
    {GgmlType::kI32, "I32", 1, 4, false, 0, false},
    {GgmlType::kI64, "I64", 1, 8, false, 0, false},
    {GgmlType::kF64, "F64", 1, 8, false, 0, false},
    {GgmlType::kIQ1_M, "IQ1_M", kQK, kQK / 8 + kQK / 16 + kQK / 32, false, 0, false},
    {GgmlType::kBF16, "BF16", 1, 2, true, 0, false},
    {GgmlType::kTQ1_0, "TQ1_0", kQK, 2 + 4 * 13, false, 0, false},
    {GgmlType::kTQ2_0, "TQ2_0", kQK, 2 + 64, false, 0, false},
    {GgmlType::kMXFP4, "MXFP4", 32, 1 + 16, false, 0, false},
};

// ---- Integer forms (ggml-quants.c's dequantize_row_* reference definitions) -----------------
// Each writes a block's int8 values and its per-group f32 scales (ggml_block_to_q8's contract).

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// IQ4_NL's and IQ4_XS's 16 non-uniform levels (ggml-common.h's kvalues_iq4nl).
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// block_q8_0 {f16 d; int8 qs[32]}: x[i] = qs[i] * d.
void q8_0_block(const uint8_t* block, int8_t* q, float* scales) {
  scales[0] = load_f16(block);
  std::memcpy(q, block + 2, 32);
}

// block_q4_0 {f16 d; uint8 qs[16]}: low nibbles are elements 0..15, high nibbles 16..31;
// x = (q - 8) * d.
void q4_0_block(const uint8_t* block, int8_t* q, float* scales) {
  scales[0] = load_f16(block);
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((qs[j] & 0x0F) - 8);
    q[j + 16] = static_cast<int8_t>((qs[j] >> 4) - 8);
  }
}

// block_q5_0 {f16 d; uint8 qh[4]; uint8 qs[16]}: Q4_0's nibbles with a fifth bit, bit j of the
// little-endian u32 qh for element j; x = (q - 16) * d.
void q5_0_block(const uint8_t* block, int8_t* q, float* scales) {
  scales[0] = load_f16(block);
  const uint32_t qh = load_u32(block + 2);
  const uint8_t* qs = block + 6;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(((qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16);
    q[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
  }
}

// block_q3_K {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d}, 256 elements in 16
// sub-blocks of 16: x = d * (scale_i - 32) * q, q = 2 bits of qs minus 4 unless the hmask bit is
// set. Scale i (6 bits): its low nibble from byte i % 8 (low nibble for i < 8, high otherwise),
// its top 2 bits from byte 8 + i % 4 at bit 2 * (i / 4). Each half of 128 elements takes 32
// bytes of qs; within it, 32 elements per bit pair j of those bytes, the hmask bit 4 * half + j.
void q3_k_block(const uint8_t* block, int8_t* q, float* scales) {
  const uint8_t* hmask = block;
  const uint8_t* qs = block + 32;
  const uint8_t* sc = block + 96;
  const float d = load_f16(block + 108);
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? sc[i] & 0x0F : sc[i - 8] >> 4;
    const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = d * static_cast<float>((low | (high << 4)) - 32);
  }
  for (int half = 0; half < 2; ++half) {
    for (int j = 0; j < 4; ++j) {
      int8_t* out = q + 128 * half + 32 * j;
      for (int l = 0; l < 32; ++l) {
        const int bits = (qs[32 * half + l] >> (2 * j)) & 3;
        const bool high = (hmask[l] >> (4 * half + j)) & 1;
        out[l] = static_cast<int8_t>(bits - (high ? 0 : 4));
      }
    }
  }
}

// block_q6_K {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}, 256 elements: a 6-bit q is
// 4 low bits from ql and 2 high bits from qh; x = d * scales[i / 16] * (q - 32). Each half of
// 128 elements uses 64 bytes of ql, 32 of qh and 8 scales.
void q6_k_block(const uint8_t* block, int8_t* q, float* scales) {
  const float d = load_f16(block + 208);
  for (int i = 0; i < 16; ++i) {
    scales[i] = d * static_cast<float>(static_cast<int8_t>(block[192 + i]));
  }
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = block + 64 * half;
    const uint8_t* qh = block + 128 + 32 * half;
    int8_t* o = q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      o[l] = static_cast<int8_t>(((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32);
      o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

// block_iq4_nl {f16 d; uint8 qs[16]}: Q4_0's nibble order; x = d * kIq4Levels[nibble].
void iq4_nl_block(const uint8_t* block, int8_t* q, float* scales) {
  scales[0] = load_f16(block);
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    q[j] = kIq4Levels[qs[j] & 0x0F];
    q[j + 16] = kIq4Levels[qs[j] >> 4];
  }
}

// block_iq4_xs {f16 d; u16 scales_h; uint8 scales_l[4]; uint8 qs[128]}, 256 elements in 8
// sub-blocks of 32, each IQ4_NL's nibble order over 16 bytes of qs: x = d * (ls - 32) *
// kIq4Levels[nibble], ls = nibble ib % 2 of scales_l[ib / 2] | bits 2ib..2ib+1 of scales_h << 4.
void iq4_xs_block(const uint8_t* block, int8_t* q, float* scales) {
  const float d = load_f16(block);
  const uint16_t scales_h = load_u16(block + 2);
  const uint8_t* scales_l = block + 4;
  for (int ib = 0; ib < 8; ++ib) {
    const int ls =
        ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | (((scales_h >> (2 * ib)) & 3) << 4);
    scales[ib] = d * static_cast<float>(ls - 32);
    const uint8_t* qs = block + 8 + 16 * ib;
    for (int j = 0; j < 16; ++j) {
      q[32 * ib + j] = kIq4Levels[qs[j] & 0x0F];
      q[32 * ib + 16 + j] = kIq4Levels[qs[j] >> 4];
    }
  }
}

// ---- Types with a min (the same reference definitions) ----------------------------------------
// Each also writes its per-group mins: x = scale * q - min, the product and the difference each
// rounded as ggml's reference does (q * d + m for Q4_1 and Q5_1, whose m is stored negated).

// block_q4_1 {f16 d; f16 m; uint8 qs[16]}: Q4_0's nibble order; x = q * d + m.
void q4_1_block(const uint8_t* block, int8_t* q, float* scales, float* mins) {
  scales[0] = load_f16(block);
  mins[0] = -load_f16(block + 2);
  const uint8_t* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(qs[j] & 0x0F);
    q[j + 16] = static_cast<int8_t>(qs[j] >> 4);
  }
}

// block_q5_1 {f16 d; f16 m; uint8 qh[4]; uint8 qs[16]}: Q5_0's bits, unsigned; x = q * d + m.
void q5_1_block(const uint8_t* block, int8_t* q, float* scales, float* mins) {
  scales[0] = load_f16(block);
  mins[0] = -load_f16(block + 2);
  const uint32_t qh = load_u32(block + 4);
  const uint8_t* qs = block + 8;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((qs[j] & 0x0F) | (((qh >> j) & 1) << 4));
    q[j + 16] = static_cast<int8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
  }
}

// block_q2_K {uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin}, 256 elements in 16 sub-blocks of
// 16: x = d * (scales[i] & 15) * q - dmin * (scales[i] >> 4), q = 2 bits of qs, laid out as
// Q3_K's low bits (sub-block 8 * half + 2j takes bit pair j of bytes 0..15 of the half's 32,
// 2j + 1 of bytes 16..31).
void q2_k_block(const uint8_t* block, int8_t* q, float* scales, float* mins) {
  const uint8_t* sc = block;
  const uint8_t* qs = block + 16;
  const float d = load_f16(block + 80);
  const float dmin = load_f16(block + 82);
  for (int i = 0; i < 16; ++i) {
    const int half = i / 8, j = (i % 8) / 2, part = i % 2;
    scales[i] = d * static_cast<float>(sc[i] & 0x0F);
    mins[i] = dmin * static_cast<float>(sc[i] >> 4);
    for (int l = 0; l < 16; ++l) {
      q[16 * i + l] = static_cast<int8_t>((qs[32 * half + 16 * part + l] >> (2 * j)) & 3);
    }
  }
}

// block_q4_K {f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]}, 256 elements in 8 sub-blocks
// of 32: x = d * scale_j * q - dmin * min_j. Each group of 32 bytes of qs holds two sub-blocks:
// low nibbles the first, high nibbles the second.
void q4_k_block(const uint8_t* block, int8_t* q, float* scales, float* mins) {
  const float d = load_f16(block);
  const float dmin = load_f16(block + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t scale = 0, min = 0;
    q4_k_scale_min(j, block + 4, &scale, &min);
    scales[j] = d * static_cast<float>(scale);
    mins[j] = dmin * static_cast<float>(min);
    const uint8_t* qs = block + 16 + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) {
      q[32 * j + l] = static_cast<int8_t>(j % 2 == 0 ? qs[l] & 0x0F : qs[l] >> 4);
    }
  }
}

// block_q5_K {f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}: Q4_K's layout
// with a fifth bit per element: bit j of qh[l] belongs to element l of sub-block j.
void q5_k_block(const uint8_t* block, int8_t* q, float* scales, float* mins) {
  q4_k_block(block, q, scales, mins);  // the same header; qs lies 32 bytes further
  const uint8_t* qh = block + 16;
  const uint8_t* qs = block + 48;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) {
      const int low = j % 2 == 0 ? qs[32 * (j / 2) + l] & 0x0F : qs[32 * (j / 2) + l] >> 4;
      q[32 * j + l] = static_cast<int8_t>(low + 16 * ((qh[l] >> j) & 1));
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

void ggml_block_to_q8(GgmlType type, const uint8_t* block, int8_t* q, float* scales, float* mins) {
  switch (type) {
    case GgmlType::kQ8_0:
      return q8_0_block(block, q, scales);
    case GgmlType::kQ4_0:
      return q4_0_block(block, q, scales);
    case GgmlType::kQ5_0:
      return q5_0_block(block, q, scales);
    case GgmlType::kQ3_K:
      return q3_k_block(block, q, scales);
    case GgmlType::kQ6_K:
      return q6_k_block(block, q, scales);
    case GgmlType::kIQ4_NL:
      return iq4_nl_block(block, q, scales);
    case GgmlType::kIQ4_XS:
      return iq4_xs_block(block, q, scales);
    case GgmlType::kQ4_1:
      return q4_1_block(block, q, scales, mins);
    case GgmlType::kQ5_1:
      return q5_1_block(block, q, scales, mins);
    case GgmlType::kQ2_K:
      return q2_k_block(block, q, scales, mins);
    case GgmlType::kQ4_K:
      return q4_k_block(block, q, scales, mins);
    case GgmlType::kQ5_K:
      return q5_k_block(block, q, scales, mins);
    default:
      TS_CHECK(false) << "ggml type " << ggml_type_name(type) << " has no 8-bit integer form";
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
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return Status::ok();
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      return Status::ok();
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      return Status::ok();
    default:
      break;
  }
  TS_CHECK(info->q8_group > 0) << "ggml type " << info->name << " is dequantizable without code";
  int8_t q[kQK];
  float scales[kQK / 16], mins[kQK / 16];
  for (int64_t b = 0; b < n / info->block_size; ++b) {
    ggml_block_to_q8(type, src + b * info->block_bytes, q, scales, mins);
    float* y = dst + b * info->block_size;
    for (int64_t j = 0; j < info->block_size; ++j) {
      const int64_t g = j / info->q8_group;
      const float product = scales[g] * static_cast<float>(q[j]);
      y[j] = info->q8_mins ? product - mins[g] : product;  // rounded twice, as ggml's
    }
  }
  return Status::ok();
}

}  // namespace tierserve

#include "kernels/q4_weight.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "common/check.h"
#include "common/dtype.h"

namespace tierserve {
namespace {

constexpr uint64_t align64(uint64_t x) { return (x + 63) / 64 * 64; }

// AutoAWQ packs output 8j + kAwqOrder[i] into nibble i.
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

uint8_t nibble(int32_t word, int i) {
  return static_cast<uint8_t>((static_cast<uint32_t>(word) >> (4 * i)) & 0xfu);
}

Status check_shape(int64_t n, int64_t k, int32_t group_size, const std::string& name) {
  if (n <= 0 || k <= 0 || group_size <= 0 || n % 8 != 0 || k % group_size != 0 ||
      group_size % 32 != 0) {
    return invalid_argument(name + ": a 4-bit weight of " + std::to_string(n) + " outputs and " +
                            std::to_string(k) + " inputs with group size " +
                            std::to_string(group_size) +
                            " is not supported (outputs a multiple of 8, group size a multiple "
                            "of 32 dividing the inputs)");
  }
  return Status::ok();
}

Q4Source empty_source(int64_t n, int64_t k, int32_t group_size) {
  Q4Source s;
  s.n = n;
  s.k = k;
  s.group_size = group_size;
  s.q.resize(static_cast<size_t>(n * k));
  s.scale.resize(static_cast<size_t>(n * (k / group_size)));
  s.zero.resize(s.scale.size());
  return s;
}

}  // namespace

Result<Q4Layout> Q4Layout::make(int64_t n, int64_t k, int32_t group_size, bool act_order,
                                bool k_quant) {
  if (n <= 0 || k <= 0 || group_size <= 0 || group_size % 32 != 0 || k % group_size != 0) {
    return invalid_argument("a 4-bit weight [" + std::to_string(n) + ", " + std::to_string(k) +
                            "] with group size " + std::to_string(group_size) +
                            " (groups must be a multiple of 32 columns and divide the row)");
  }
  if (k_quant && (group_size != 32 || k % 256 != 0 || act_order)) {
    return invalid_argument("a k-quant 4-bit weight [" + std::to_string(n) + ", " +
                            std::to_string(k) + "] with group size " + std::to_string(group_size) +
                            " (k-quant weights have groups of 32 in rows of a multiple of 256 "
                            "columns, without act order)");
  }
  Q4Layout l;
  l.n = n;
  l.k = k;
  l.group_size = group_size;
  l.act_order = act_order;
  l.k_quant = k_quant;
  const uint64_t un = static_cast<uint64_t>(n), groups = static_cast<uint64_t>(k / group_size);
  l.scales_offset = align64(un * static_cast<uint64_t>(k) / 2);
  l.zeros_offset = align64(l.scales_offset + un * groups * (k_quant ? 1 : 2));
  l.supers_offset = align64(l.zeros_offset + un * groups);
  l.perm_offset = k_quant ? align64(l.supers_offset + un * (groups / 8) * 4) : l.supers_offset;
  l.bytes = act_order ? align64(l.perm_offset + static_cast<uint64_t>(k) * 4) : l.perm_offset;
  return l;
}

Q4Layout Q4Layout::of(const TensorView& w) {
  TS_CHECK(w.dtype == DType::kQ4 && w.ndim == 2) << "not a q4 weight: " << w.debug_string();
  auto l = make(w.shape[0], w.shape[1], w.group_size, w.act_order, w.k_quant);
  TS_CHECK(l.is_ok()) << l.status().to_string();
  return l.value();
}

TensorView q4_view(void* data, const Q4Layout& layout, DeviceKind device) {
  TensorView v;
  v.data = data;
  v.dtype = DType::kQ4;
  v.ndim = 2;
  v.shape = {layout.n, layout.k, 0, 0};
  v.strides = {layout.k, 1, 0, 0};
  v.device = device;
  v.group_size = layout.group_size;
  v.act_order = layout.act_order;
  v.k_quant = layout.k_quant;
  return v;
}

Result<Q4Source> unpack_awq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                            int64_t n, int64_t k, int32_t group_size, const std::string& name) {
  TS_RETURN_IF_ERROR(check_shape(n, k, group_size, name));
  Q4Source s = empty_source(n, k, group_size);
  const int64_t words = n / 8, groups = k / group_size;
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t j = 0; j < words; ++j) {
      const int32_t word = qweight[c * words + j];
      for (int i = 0; i < 8; ++i)
        s.q[static_cast<size_t>((8 * j + kAwqOrder[i]) * k + c)] = nibble(word, i);
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < words; ++j) {
      const int32_t word = qzeros[g * words + j];
      for (int i = 0; i < 8; ++i) {
        s.zero[static_cast<size_t>((8 * j + kAwqOrder[i]) * groups + g)] = nibble(word, i);
      }
    }
    for (int64_t r = 0; r < n; ++r)
      s.scale[static_cast<size_t>(r * groups + g)] = scales[g * n + r];
  }
  return s;
}

Result<Q4Source> unpack_gptq(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                             const int32_t* g_idx, int64_t n, int64_t k, int32_t group_size,
                             int32_t zero_offset, const std::string& name) {
  TS_RETURN_IF_ERROR(check_shape(n, k, group_size, name));
  if (k % 8 != 0) return invalid_argument(name + ": inputs not a multiple of 8");
  const int64_t groups = k / group_size, words = n / 8;
  // Stored column order: inputs sorted by group (stable), identity without act order.
  std::vector<int32_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  bool act_order = false;
  if (g_idx != nullptr) {
    for (int64_t c = 0; c < k; ++c) {
      if (g_idx[c] < 0 || g_idx[c] >= groups) {
        return invalid_argument(name + ": g_idx[" + std::to_string(c) + "] is " +
                                std::to_string(g_idx[c]) + ", outside [0, " +
                                std::to_string(groups) + ")");
      }
      act_order = act_order || g_idx[c] != c / group_size;
    }
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return g_idx[a] < g_idx[b]; });
    for (int64_t c = 0; c < k; ++c) {
      if (g_idx[perm[static_cast<size_t>(c)]] != c / group_size) {
        return invalid_argument(name + ": g_idx does not give every group " +
                                std::to_string(group_size) + " inputs");
      }
    }
  }
  Q4Source s = empty_source(n, k, group_size);
  for (int64_t c = 0; c < k; ++c) {
    const int64_t input = perm[static_cast<size_t>(c)];
    for (int64_t r = 0; r < n; ++r) {
      s.q[static_cast<size_t>(r * k + c)] = nibble(qweight[(input / 8) * n + r], input % 8);
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      const size_t at = static_cast<size_t>(r * groups + g);
      s.zero[at] = static_cast<uint8_t>(nibble(qzeros[g * words + r / 8], r % 8) + zero_offset);
      s.scale[at] = scales[g * n + r];
    }
  }
  if (act_order) s.perm = std::move(perm);
  return s;
}

void pack_q4(const Q4Source& src, const Q4Layout& l, void* dst) {
  const size_t groups = static_cast<size_t>(l.n * l.groups());
  TS_CHECK(src.n == l.n && src.k == l.k && src.group_size == l.group_size &&
           (!src.perm.empty()) == l.act_order && (!src.sub_scale.empty()) == l.k_quant &&
           src.zero.size() == groups &&
           (l.k_quant ? src.sub_scale.size() == groups && src.supers.size() == groups / 4
                      : src.scale.size() == groups))
      << "q4 source does not match its layout";
  uint8_t* base = static_cast<uint8_t*>(dst);
  std::memset(base, 0, l.bytes);
  for (int64_t r = 0; r < l.n; ++r) {
    const uint8_t* q = src.q.data() + r * l.k;
    uint8_t* row = base + r * (l.k / 2);
    for (int64_t b = 0; b < l.k / 32; ++b) {
      for (int j = 0; j < 16; ++j) {
        row[b * 16 + j] = static_cast<uint8_t>(q[32 * b + j] | (q[32 * b + 16 + j] << 4));
      }
    }
  }
  if (l.k_quant) {
    std::memcpy(base + l.scales_offset, src.sub_scale.data(), src.sub_scale.size());
    std::memcpy(base + l.supers_offset, src.supers.data(), src.supers.size() * 2);
  } else {
    std::memcpy(base + l.scales_offset, src.scale.data(), src.scale.size() * 2);
  }
  std::memcpy(base + l.zeros_offset, src.zero.data(), src.zero.size());
  if (l.act_order) std::memcpy(base + l.perm_offset, src.perm.data(), src.perm.size() * 4);
}

void dequantize_q4_rows(const void* blob, const Q4Layout& l, int64_t row_begin, int64_t rows,
                        float* out) {
  const uint8_t* base = static_cast<const uint8_t*>(blob);
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(base + l.scales_offset);
  const uint8_t* sub_scales = base + l.scales_offset;
  const uint16_t* supers = reinterpret_cast<const uint16_t*>(base + l.supers_offset);
  const uint8_t* zeros = base + l.zeros_offset;
  const int64_t groups = l.groups();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = row_begin + i;
    const uint8_t* row = base + r * (l.k / 2);
    float* o = out + i * l.k;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t at = r * groups + g;
      // w = q * s - m: the zero form's (q - z) * s, exact in f32 either way round.
      float s, m;
      if (l.k_quant) {
        const uint16_t* dd = supers + 2 * (at / 8);
        s = f16_to_f32(dd[0]) * static_cast<float>(sub_scales[at]);
        m = f16_to_f32(dd[1]) * static_cast<float>(zeros[at]);
      } else {
        s = f16_to_f32(scales[at]);
        m = static_cast<float>(zeros[at]) * s;
      }
      for (int64_t c = g * l.group_size; c < (g + 1) * l.group_size; c += 32) {
        const uint8_t* block = row + c / 2;
        for (int j = 0; j < 16; ++j) {
          o[c + j] = s * static_cast<float>(block[j] & 0xf) - m;
          o[c + 16 + j] = s * static_cast<float>(block[j] >> 4) - m;
        }
      }
    }
  }
}

std::vector<float> dequantize_q4(const void* blob, const Q4Layout& l) {
  std::vector<float> stored(static_cast<size_t>(l.n * l.k));
  dequantize_q4_rows(blob, l, 0, l.n, stored.data());
  if (!l.act_order) return stored;
  const int32_t* perm =
      reinterpret_cast<const int32_t*>(static_cast<const uint8_t*>(blob) + l.perm_offset);
  std::vector<float> w(stored.size());
  for (int64_t r = 0; r < l.n; ++r) {
    for (int64_t c = 0; c < l.k; ++c) w[r * l.k + perm[c]] = stored[r * l.k + c];
  }
  return w;
}

}  // namespace tierserve

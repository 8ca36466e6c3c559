#include "engine/model_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "common/logging.h"
#include "common/units.h"
#include "engine/gguf_model.h"
#include "engine/safetensors.h"
#include "offload/resident_weight_provider.h"

namespace tierserve {
namespace {

// Larger than any model this engine could hold in all tiers together; a config asking for more is
// malformed.
constexpr uint64_t kMaxWeightBytes = 1ull << 46;  // 64 TiB

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TensorView make_view(void* data, DType dtype, const std::vector<int64_t>& shape,
                     DeviceKind device) {
  if (shape.size() == 1) return TensorView::contiguous(data, dtype, {shape[0]}, device);
  return TensorView::contiguous(data, dtype, {shape[0], shape[1]}, device);
}

// splitmix64: a small, fast, well-mixed generator for dummy weights.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fills `n` elements of `dtype` at `dst`: 1.0 for norm weights, else uniform with the standard
// deviation of N(0, 0.02) (uniform(-a, a) has std a / sqrt(3)). Works in f32 chunks converted to
// the target dtype.
void fill_dummy(void* dst, DType dtype, int64_t n, bool is_norm, uint64_t seed) {
  uint64_t state = seed;
  const float a = 0.02f * std::sqrt(3.0f);
  constexpr int64_t kChunk = 4096;
  float buf[kChunk];
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t len = std::min(kChunk, n - begin);
    for (int64_t i = 0; i < len; ++i) {
      float u = static_cast<float>(next_random(state) >> 40) * (1.0f / 16777216.0f);
      buf[i] = is_norm ? 1.0f : (2.0f * u - 1.0f) * a;
    }
    convert(buf, DType::kF32, static_cast<char*>(dst) + begin * dtype_size(dtype), dtype,
            static_cast<size_t>(len));
  }
}

// Divides each row of a [rows, cols] matrix by its L2 norm (at least 1e-12), as torch's
// F.normalize(w) does for Baichuan2's NormHead: the norm accumulated from the stored values and
// rounded to the matrix's dtype (torch's norm of a bf16 tensor is bf16), the quotient too.
void normalize_rows(void* data, DType dtype, int64_t rows, int64_t cols) {
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(dtype);
  for (int64_t r = 0; r < rows; ++r) {
    char* p = static_cast<char*>(data) + static_cast<size_t>(r) * row_bytes;
    convert(p, dtype, row.data(), DType::kF32, row.size());
    double sum = 0;
    for (float x : row) sum += static_cast<double>(x) * x;
    float norm = std::max(static_cast<float>(std::sqrt(sum)), 1e-12f);
    uint32_t rounded = 0;  // norm in the matrix's dtype and back
    convert(&norm, DType::kF32, &rounded, dtype, 1);
    convert(&rounded, dtype, &norm, DType::kF32, 1);
    for (float& x : row) x /= norm;
    convert(row.data(), DType::kF32, p, dtype, row.size());
  }
}

bool is_float(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace

bool is_gemm_weight(const ModelConfig& config, const WeightSpec& spec) {
  if (spec.unit == head_unit(config)) return spec.slot == kLmHead;
  if (spec.unit == kEmbeddingUnit) return false;
  switch (spec.slot) {
    case kQProj:
    case kKProj:
    case kVProj:
    case kOProj:
    case kGateProj:
    case kUpProj:
    case kDownProj:
      return true;
    default:
      return false;
  }
}

bool parse_load_format(const std::string& name, LoadFormat* out) {
  if (name == "auto" || name == "safetensors") {
    *out = LoadFormat::kAuto;
    return true;
  }
  if (name == "dummy") {
    *out = LoadFormat::kDummy;
    return true;
  }
  return false;
}

namespace {

// Checkpoint names of one architecture's tensors. A fused tensor is listed once per slice.
struct TensorNames {
  std::string embed, final_norm, lm_head;
  std::string layer_prefix;  // followed by the layer index and "."
  std::string input_norm, post_attn_norm;
  std::string q, k, v, o;                         // weights (".weight" / ".bias" appended)
  std::string gate, up, down;                     //
  std::string q_norm, k_norm;                     // Qwen3
  bool fused_qkv = false, fused_gate_up = false;  // q/k/v (gate/up) are slices of `q` (`gate`)
};

TensorNames tensor_names(const ModelConfig& c) {
  TensorNames n;
  if (c.gguf) {  // llama.cpp's names
    n.embed = "token_embd.weight";
    n.final_norm = "output_norm.weight";
    n.lm_head = "output.weight";
    n.layer_prefix = "blk.";
    n.input_norm = "attn_norm.weight";
    n.post_attn_norm = "ffn_norm.weight";
    n.q = "attn_q";
    n.k = "attn_k";
    n.v = "attn_v";
    n.o = "attn_output";
    n.gate = "ffn_gate";
    n.up = "ffn_up";
    n.down = "ffn_down";
    n.q_norm = "attn_q_norm.weight";
    n.k_norm = "attn_k_norm.weight";
    return n;
  }
  if (c.architecture == Architecture::kChatGlm) {
    n.embed = "transformer.embedding.word_embeddings.weight";
    n.final_norm = "transformer.encoder.final_layernorm.weight";
    n.lm_head = "transformer.output_layer.weight";
    n.layer_prefix = "transformer.encoder.layers.";
    n.input_norm = "input_layernorm.weight";
    n.post_attn_norm = "post_attention_layernorm.weight";
    n.q = n.k = n.v = "self_attention.query_key_value";
    n.o = "self_attention.dense";
    n.gate = n.up = "mlp.dense_h_to_4h";
    n.down = "mlp.dense_4h_to_h";
    n.fused_qkv = n.fused_gate_up = true;
    return n;
  }
  n.embed = "model.embed_tokens.weight";
  n.final_norm = "model.norm.weight";
  n.lm_head = "lm_head.weight";
  n.layer_prefix = "model.layers.";
  n.input_norm = "input_layernorm.weight";
  n.post_attn_norm = "post_attention_layernorm.weight";
  n.q = "self_attn.q_proj";
  n.k = "self_attn.k_proj";
  n.v = "self_attn.v_proj";
  if (c.architecture == Architecture::kBaichuan) {
    n.q = n.k = n.v = "self_attn.W_pack";
    n.fused_qkv = true;
  }
  n.o = "self_attn.o_proj";
  n.gate = "mlp.gate_proj";
  n.up = "mlp.up_proj";
  n.down = "mlp.down_proj";
  n.q_norm = "self_attn.q_norm.weight";
  n.k_norm = "self_attn.k_norm.weight";
  return n;
}

}  // namespace

std::vector<WeightSpec> weight_specs(const ModelConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  const int64_t q = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const TensorNames n = tensor_names(c);
  std::vector<WeightSpec> specs;
  // A whole tensor, or rows [row, row + shape[0]) of a fused one of `fused_rows` rows.
  auto add = [&specs](int32_t unit, int32_t slot, std::string name, std::vector<int64_t> shape,
                      int64_t fused_rows = 0, int64_t row = 0) {
    WeightSpec spec;
    spec.unit = unit;
    spec.slot = slot;
    spec.name = std::move(name);
    spec.shape = shape;
    if (fused_rows > 0) {
      spec.source_shape = shape;
      spec.source_shape[0] = fused_rows;
      spec.source_row = row;
    }
    specs.push_back(std::move(spec));
  };
  add(kEmbeddingUnit, kEmbedTokens, n.embed, {v, d});
  const int64_t qkv_rows = n.fused_qkv ? q + 2 * kv : 0;
  const int64_t gate_up_rows = n.fused_gate_up ? 2 * f : 0;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const int32_t u = layer_unit(l);
    const std::string p = n.layer_prefix + std::to_string(l) + ".";
    add(u, kInputNorm, p + n.input_norm, {d});
    add(u, kQProj, p + n.q + ".weight", {q, d}, qkv_rows, 0);
    add(u, kKProj, p + n.k + ".weight", {kv, d}, qkv_rows, q);
    add(u, kVProj, p + n.v + ".weight", {kv, d}, qkv_rows, q + kv);
    add(u, kOProj, p + n.o + ".weight", {d, q});
    if (c.qkv_bias) {
      add(u, kQBias, p + n.q + ".bias", {q}, qkv_rows, 0);
      add(u, kKBias, p + n.k + ".bias", {kv}, qkv_rows, q);
      add(u, kVBias, p + n.v + ".bias", {kv}, qkv_rows, q + kv);
    }
    if (c.o_bias) add(u, kOBias, p + n.o + ".bias", {d});
    if (c.qk_norm) {
      add(u, kQNorm, p + n.q_norm, {c.head_dim});
      add(u, kKNorm, p + n.k_norm, {c.head_dim});
    }
    add(u, kPostAttnNorm, p + n.post_attn_norm, {d});
    add(u, kGateProj, p + n.gate + ".weight", {f, d}, gate_up_rows, 0);
    add(u, kUpProj, p + n.up + ".weight", {f, d}, gate_up_rows, f);
    add(u, kDownProj, p + n.down + ".weight", {d, f});
    if (c.mlp_bias) {
      add(u, kGateBias, p + n.gate + ".bias", {f}, gate_up_rows, 0);
      add(u, kUpBias, p + n.up + ".bias", {f}, gate_up_rows, f);
      add(u, kDownBias, p + n.down + ".bias", {d});
    }
  }
  if (c.gguf && c.architecture == Architecture::kLlama) {
    for (WeightSpec& spec : specs) {
      if (spec.unit == kEmbeddingUnit || spec.unit == head_unit(c)) continue;
      if (spec.slot == kQProj || spec.slot == kQBias) spec.gguf_heads = c.num_heads;
      if (spec.slot == kKProj || spec.slot == kKBias) spec.gguf_heads = c.num_kv_heads;
    }
  }
  if (c.quant.method != QuantMethod::kNone) {
    for (WeightSpec& spec : specs) {
      if (spec.unit == kEmbeddingUnit || spec.unit == head_unit(c) || spec.shape.size() != 2) {
        continue;
      }
      spec.quantized = true;
      spec.name = spec.name.substr(0, spec.name.size() - std::string("weight").size()) + "qweight";
    }
  }
  add(head_unit(c), kFinalNorm, n.final_norm, {d});
  if (!c.tie_word_embeddings) {
    add(head_unit(c), kLmHead, n.lm_head, {v, d});
    specs.back().normalize_rows = c.norm_head;
  }
  return specs;
}

uint64_t resolved_spec_bytes(const ResolvedWeights& w, size_t i) {
  if (w.dtypes[i] == DType::kQ4) return w.q4[i].bytes;
  if (w.dtypes[i] == DType::kQ8) return w.q8[i].bytes;
  return static_cast<uint64_t>(numel(w.specs[i].shape)) * dtype_size(w.dtypes[i]);
}

namespace {

// Finds and checks the tensors of quantized spec `spec` (kAuto): qweight, qzeros, scales and
// g_idx with the shapes and dtypes of config.quant's method; returns the blob layout.
Result<Q4Layout> resolve_quantized(const ModelConfig& config, const WeightSpec& spec,
                                   const Checkpoint* checkpoint,
                                   std::array<CheckpointTensor, 4>* sources) {
  const int64_t n = spec.shape[0], k = spec.shape[1];
  const int64_t group = config.quant.group_size > 0 ? config.quant.group_size : k;
  const std::string base = spec.name.substr(0, spec.name.size() - std::string("qweight").size());
  if (!spec.source_shape.empty()) {
    return unimplemented(base + "qweight: quantized fused projections are not supported");
  }
  if (n % 8 != 0 || k % group != 0 || (config.quant.method == QuantMethod::kGptq && k % 8 != 0)) {
    return invalid_argument(base + "qweight: a [" + std::to_string(n) + ", " + std::to_string(k) +
                            "] weight cannot have groups of " + std::to_string(group) +
                            " packed 8 to an int32");
  }
  const bool awq = config.quant.method == QuantMethod::kAwq;
  struct Expected {
    const char* suffix;
    DType dtype;
    std::vector<int64_t> shape;
    bool required;
  };
  const Expected expected[4] = {
      {"qweight", DType::kI32,
       awq ? std::vector<int64_t>{k, n / 8} : std::vector<int64_t>{k / 8, n}, true},
      {"qzeros", DType::kI32, {k / group, n / 8}, true},
      {"scales", DType::kF16, {k / group, n}, true},
      {"g_idx", DType::kI32, {k}, false},
  };
  for (int i = 0; i < 4; ++i) {
    const Expected& e = expected[i];
    const std::string name = base + e.suffix;
    if (i == 3 && (awq || !checkpoint->contains(name))) continue;
    TS_ASSIGN_OR_RETURN((*sources)[static_cast<size_t>(i)], checkpoint->find(name));
    const SafetensorsEntry& entry = *(*sources)[static_cast<size_t>(i)].entry;
    const std::string file = (*sources)[static_cast<size_t>(i)].file->path().filename().string();
    if (entry.dtype != e.dtype || entry.shape != e.shape) {
      return invalid_argument(file + ": tensor '" + name + "' is " +
                              std::string(dtype_name(entry.dtype)) + shape_string(entry.shape) +
                              ", expected " + std::string(dtype_name(e.dtype)) +
                              shape_string(e.shape) + " for " + (awq ? "AWQ" : "GPTQ") +
                              " with group size " + std::to_string(group));
    }
  }
  const bool act_order = !awq && config.quant.desc_act && (*sources)[3].data != nullptr;
  return Q4Layout::make(n, k, static_cast<int32_t>(group), act_order);
}

// A checkpoint tensor's elements copied out (its data need not be aligned).
template <typename T>
std::vector<T> copy_out(const CheckpointTensor& t) {
  std::vector<T> out((t.entry->end - t.entry->begin) / sizeof(T));
  std::memcpy(out.data(), t.data, out.size() * sizeof(T));
  return out;
}

// Writes quantized spec `i` as a Q4 blob at host memory `dst`: from the checkpoint, or dummy
// values (uniform nibbles, zero 8, scales giving a standard deviation near 0.02).
void write_quantized(const ModelConfig& config, const ResolvedWeights& w, size_t i, void* dst) {
  const Q4Layout& l = w.q4[i];
  Q4Source src;
  if (w.format == LoadFormat::kAuto) {
    const auto& t = w.q4_sources[i];
    const std::vector<int32_t> qweight = copy_out<int32_t>(t[0]), qzeros = copy_out<int32_t>(t[1]);
    const std::vector<uint16_t> scales = copy_out<uint16_t>(t[2]);
    const std::vector<int32_t> g_idx =
        t[3].data != nullptr ? copy_out<int32_t>(t[3]) : std::vector<int32_t>();
    auto unpacked = config.quant.method == QuantMethod::kAwq
                        ? unpack_awq(qweight.data(), qzeros.data(), scales.data(), l.n, l.k,
                                     l.group_size, w.specs[i].name)
                        : unpack_gptq(qweight.data(), qzeros.data(), scales.data(),
                                      g_idx.empty() ? nullptr : g_idx.data(), l.n, l.k,
                                      l.group_size, config.quant.zero_offset, w.specs[i].name);
    TS_CHECK(unpacked.is_ok()) << unpacked.status().to_string();  // shapes checked at resolve
    src = std::move(unpacked).value();
  } else {
    src.n = l.n;
    src.k = l.k;
    src.group_size = l.group_size;
    uint64_t state = w.seed * 1000003ull + i;
    src.q.resize(static_cast<size_t>(l.n * l.k));
    for (uint8_t& q : src.q) q = static_cast<uint8_t>(next_random(state) >> 60);
    src.scale.assign(static_cast<size_t>(l.n * l.groups()), f32_to_f16(0.02f / 4.6f));
    src.zero.assign(src.scale.size(), 8);
  }
  if (l.act_order && src.perm.empty()) {  // desc_act with a g_idx in natural order
    src.perm.resize(static_cast<size_t>(l.k));
    for (int64_t c = 0; c < l.k; ++c) src.perm[static_cast<size_t>(c)] = static_cast<int32_t>(c);
  }
  pack_q4(src, l, dst);
}

// A GGUF model's tensors (ModelConfig::gguf): present, of the spec's shape, of a type this
// build reads. Q4_0 and Q4_K gemm weights become Q4 blobs, those of the other quantized types
// Q8 blobs (with mins for Q4_1, Q5_1, Q2_K, Q5_K); F32/F16/BF16 stay; other tensors of quantized
// types (embeddings) are dequantized to config.dtype.
Status resolve_gguf(const ModelConfig& config, const std::filesystem::path& path,
                    ResolvedWeights* w) {
  const std::optional<std::filesystem::path> gguf = gguf_file_of(path);
  if (!gguf) return not_found(path.string() + ": no GGUF file");
  TS_ASSIGN_OR_RETURN(w->gguf, GgufFile::open(*gguf));
  const std::string file = gguf->filename().string();
  w->gguf_tensors.assign(w->specs.size(), nullptr);
  for (size_t i = 0; i < w->specs.size(); ++i) {
    const WeightSpec& s = w->specs[i];
    const GgufTensorInfo* t = w->gguf->find(s.name);
    if (t == nullptr) return not_found(file + ": tensor '" + s.name + "' not found");
    if (t->shape() != s.shape) {
      return invalid_argument(file + ": tensor '" + s.name + "' has shape " +
                              shape_string(t->shape()) + ", expected " + shape_string(s.shape) +
                              " from its metadata");
    }
    TS_RETURN_IF_ERROR(check_gguf_dequantizable(*t, file));
    w->gguf_tensors[i] = t;
    switch (t->type) {
      case GgmlType::kF32:
        w->dtypes[i] = DType::kF32;
        break;
      case GgmlType::kF16:
        w->dtypes[i] = DType::kF16;
        break;
      case GgmlType::kBF16:
        w->dtypes[i] = DType::kBF16;
        break;
      default:
        if ((t->type == GgmlType::kQ4_0 || t->type == GgmlType::kQ4_K) &&
            is_gemm_weight(config, s)) {
          TS_ASSIGN_OR_RETURN(w->q4[i], Q4Layout::make(s.shape[0], s.shape[1], 32, false,
                                                       t->type == GgmlType::kQ4_K));
          w->dtypes[i] = DType::kQ4;
          w->specs[i].quantized = true;
        } else if (ggml_type_info(t->type)->q8_group > 0 && is_gemm_weight(config, s)) {
          const GgmlTypeInfo& info = *ggml_type_info(t->type);
          TS_ASSIGN_OR_RETURN(
              w->q8[i], Q8Layout::make(s.shape[0], s.shape[1], static_cast<int32_t>(info.q8_group),
                                       info.q8_mins));
          w->dtypes[i] = DType::kQ8;
          w->specs[i].quantized = true;
        } else {
          w->dtypes[i] = config.dtype;
        }
        break;
    }
  }
  return Status::ok();
}

// GGUF spec `i` in host memory at `dst`: a Q4 or Q8 blob, or rows of dtypes[i] (dequantized,
// with llama's Q/K rows put back in Hugging Face order).
void write_gguf(const ResolvedWeights& w, size_t i, void* dst) {
  const WeightSpec& s = w.specs[i];
  const GgufTensorInfo& t = *w.gguf_tensors[i];
  const uint8_t* data = w.gguf->data(t);
  const int64_t rows = s.shape[0], cols = s.shape.size() > 1 ? s.shape[1] : 1;
  std::vector<uint8_t> plain;  // before the Q/K row order is undone
  void* out = s.gguf_heads > 0 ? nullptr : dst;
  if (s.quantized && w.dtypes[i] == DType::kQ8) {
    const Q8Layout& l = w.q8[i];
    std::vector<uint8_t> blob;  // before the Q/K row order is undone
    void* to = dst;
    if (s.gguf_heads > 0) {
      blob.resize(l.bytes);
      to = blob.data();
    }
    ggml_to_q8(t.type, data, l, to);
    if (s.gguf_heads > 0) {  // rows permute as wholes, in every section
      char* out8 = static_cast<char*>(dst);
      std::memset(dst, 0, l.bytes);  // the padding between sections
      unpermute_gguf_rows(blob.data(), out8, rows, cols, 1, s.gguf_heads);
      unpermute_gguf_rows(blob.data() + l.scales_offset, out8 + l.scales_offset, rows, l.groups(),
                          4, s.gguf_heads);
      if (l.with_mins) {
        unpermute_gguf_rows(blob.data() + l.mins_offset, out8 + l.mins_offset, rows, l.groups(), 4,
                            s.gguf_heads);
      }
    }
    return;
  }
  if (s.quantized) {
    // Rows permute as wholes: undo the order on the unpacked integers.
    Q4Source src = w.q4[i].k_quant ? q4_k_to_q4(data, rows, cols) : q4_0_to_q4(data, rows, cols);
    if (s.gguf_heads > 0) {
      Q4Source back = src;
      const auto unpermute = [&](const auto& from, auto& to) {
        if (from.empty()) return;
        const int64_t per_row = static_cast<int64_t>(from.size()) / rows;
        unpermute_gguf_rows(from.data(), to.data(), rows, per_row, sizeof(from[0]), s.gguf_heads);
      };
      unpermute(src.q, back.q);
      unpermute(src.scale, back.scale);
      unpermute(src.zero, back.zero);
      unpermute(src.sub_scale, back.sub_scale);
      unpermute(src.supers, back.supers);
      src = std::move(back);
    }
    pack_q4(src, w.q4[i], dst);
    return;
  }
  const size_t esize = dtype_size(w.dtypes[i]);
  const size_t bytes = static_cast<size_t>(rows * cols) * esize;
  if (out == nullptr) {
    plain.resize(bytes);
    out = plain.data();
  }
  const bool stored = (t.type == GgmlType::kF32 && w.dtypes[i] == DType::kF32) ||
                      (t.type == GgmlType::kF16 && w.dtypes[i] == DType::kF16) ||
                      (t.type == GgmlType::kBF16 && w.dtypes[i] == DType::kBF16);
  if (stored) {
    std::memcpy(out, data, bytes);
  } else {
    std::vector<float> row(static_cast<size_t>(cols));
    const int64_t row_bytes = static_cast<int64_t>(t.nbytes) / rows;
    for (int64_t r = 0; r < rows; ++r) {
      Status st = dequantize_gguf_row(t.type, data + r * row_bytes, cols, row.data());
      TS_CHECK(st.is_ok()) << st.to_string();  // checked at resolve
      convert(row.data(), DType::kF32,
              static_cast<char*>(out) + static_cast<size_t>(r * cols) * esize, w.dtypes[i],
              row.size());
    }
  }
  if (s.gguf_heads > 0) unpermute_gguf_rows(out, dst, rows, cols, esize, s.gguf_heads);
}

}  // namespace

Result<ResolvedWeights> resolve_weights(const ModelConfig& config,
                                        const std::filesystem::path& model_dir, LoadFormat format,
                                        Backend* backend, uint64_t seed) {
  ResolvedWeights w;
  w.format = format;
  w.seed = seed;
  w.specs = weight_specs(config);
  const std::vector<WeightSpec>& specs = w.specs;

  // Resolve every tensor (and its dtype) before allocating anything.
  w.sources.resize(specs.size());
  w.source_offsets.assign(specs.size(), 0);
  w.dtypes.assign(specs.size(), config.dtype);
  w.q4.resize(specs.size());
  w.q8.resize(specs.size());
  w.q4_sources.resize(specs.size());
  if (format == LoadFormat::kDummy) {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!specs[i].quantized) continue;
      const int64_t k = specs[i].shape[1];
      TS_ASSIGN_OR_RETURN(w.q4[i],
                          Q4Layout::make(specs[i].shape[0], k,
                                         config.quant.group_size > 0 ? config.quant.group_size
                                                                     : static_cast<int32_t>(k),
                                         false));
      w.dtypes[i] = DType::kQ4;
    }
  }
  if (format == LoadFormat::kAuto && config.gguf) {
    TS_RETURN_IF_ERROR(resolve_gguf(config, model_dir, &w));
  } else if (format == LoadFormat::kAuto) {
    TS_ASSIGN_OR_RETURN(w.checkpoint, Checkpoint::open(model_dir));
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].quantized) {
        TS_ASSIGN_OR_RETURN(
            w.q4[i], resolve_quantized(config, specs[i], w.checkpoint.get(), &w.q4_sources[i]));
        w.dtypes[i] = DType::kQ4;
        continue;
      }
      TS_ASSIGN_OR_RETURN(w.sources[i], w.checkpoint->find(specs[i].name));
      const SafetensorsEntry& e = *w.sources[i].entry;
      const std::string file = w.sources[i].file->path().filename().string();
      if (!is_float(e.dtype)) {
        return unimplemented(file + ": tensor '" + e.name + "' has dtype " +
                             std::string(dtype_name(e.dtype)) + ", expected f32, f16 or bf16");
      }
      const std::vector<int64_t>& expected =
          specs[i].source_shape.empty() ? specs[i].shape : specs[i].source_shape;
      if (e.shape != expected) {
        return invalid_argument(file + ": tensor '" + e.name + "' has shape " +
                                shape_string(e.shape) + ", expected " + shape_string(expected) +
                                " from config.json");
      }
      w.dtypes[i] = e.dtype;
      // A fused slice starts source_row rows in (rows are contiguous: the slice is too).
      const int64_t row_elems = numel(specs[i].shape) / specs[i].shape[0];
      w.source_offsets[i] =
          static_cast<uint64_t>(specs[i].source_row * row_elems) * dtype_size(e.dtype);
      w.sources[i].data = static_cast<const char*>(w.sources[i].data) + w.source_offsets[i];
    }
  }

  // Each tensor 64-byte aligned, in spec (= unit) order. Sizes are summed in 128 bits: the
  // config's bounds keep each dimension sane, not necessarily their products. Gemm weights
  // take the backend's packed layout where it has one (Backend::packed_weight_bytes); a tied
  // lm_head then gets a packed copy of its own at the end (in the head unit), as the embedding
  // reads plain rows.
  w.offsets.assign(specs.size() + 1, 0);
  w.packed.assign(specs.size() + 1, 0);
  unsigned __int128 total_wide = 0;
  const int64_t vocab = config.vocab_size, hidden = config.hidden_size;
  const uint64_t tied_head_packed =
      config.tie_word_embeddings ? backend->packed_weight_bytes(config.dtype, vocab, hidden) : 0;
  w.tied_head_packed = tied_head_packed > 0;
  w.unit_begin.assign(static_cast<size_t>(head_unit(config)) + 2, 0);
  int32_t unit = -1;
  for (size_t i = 0; i <= specs.size(); ++i) {
    unsigned __int128 bytes = 0;
    std::string name = "lm_head (packed copy of the tied embedding)";
    std::vector<int64_t> shape = {vocab, hidden};
    if (i < specs.size()) {
      name = specs[i].name;
      shape = specs[i].shape;
      if (specs[i].quantized) {
        bytes = resolved_spec_bytes(w, i);
      } else {
        bytes = dtype_size(w.dtypes[i]);
        for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
      }
      if (!specs[i].quantized && is_gemm_weight(config, specs[i]) && bytes <= kMaxWeightBytes) {
        w.packed[i] = backend->packed_weight_bytes(w.dtypes[i], shape[0], shape[1]);
        if (w.packed[i] > 0) bytes = w.packed[i];
      }
      for (; unit < specs[i].unit; ++unit) {
        w.unit_begin[static_cast<size_t>(unit) + 1] = static_cast<uint64_t>(total_wide);
      }
    } else {
      bytes = w.packed[i] = tied_head_packed;
    }
    w.offsets[i] = static_cast<uint64_t>(total_wide);
    total_wide = (total_wide + bytes + 63) / 64 * 64;
    if (total_wide > kMaxWeightBytes) {
      return invalid_argument("config.json: the model's weights would need more than " +
                              format_bytes(kMaxWeightBytes) + " (tensor '" + name + "' has shape " +
                              shape_string(shape) + ")");
    }
  }
  w.unit_begin.back() = static_cast<uint64_t>(total_wide);
  return w;
}

std::string weight_unit_name(const ModelConfig& config, int32_t unit) {
  if (unit == kEmbeddingUnit) return "embedding";
  if (unit == head_unit(config)) return "head";
  return "layer " + std::to_string(unit - 1);
}

int32_t weight_unit_slots(const ModelConfig& config, int32_t unit) {
  if (unit == kEmbeddingUnit) return kNumEmbeddingSlots;
  if (unit == head_unit(config)) return kNumHeadSlots;
  return kNumLayerSlots;
}

WeightUnit write_weight_unit(const ModelConfig& config, const ResolvedWeights& w, int32_t unit,
                             char* dst, Backend* backend, const WeightUnit* embedding) {
  WeightUnit out;
  out.name = weight_unit_name(config, unit);
  out.tensors.resize(static_cast<size_t>(weight_unit_slots(config, unit)));
  const uint64_t begin = w.unit_begin[static_cast<size_t>(unit)];
  std::vector<uint8_t> staging;  // a dummy weight before packing
  for (size_t i = 0; i < w.specs.size(); ++i) {
    const WeightSpec& s = w.specs[i];
    if (s.unit != unit) continue;
    void* to = dst + (w.offsets[i] - begin);
    if (s.quantized) {
      auto write = [&](void* at) {
        if (w.gguf != nullptr) {
          write_gguf(w, i, at);
        } else {
          write_quantized(config, w, i, at);
        }
      };
      if (backend->device() == DeviceKind::kCpu) {
        write(to);
      } else {
        staging.resize(resolved_spec_bytes(w, i));
        write(staging.data());
        backend->copy(to, staging.data(), staging.size());
      }
      out.tensors[static_cast<size_t>(s.slot)] = w.dtypes[i] == DType::kQ8
                                                     ? q8_view(to, w.q8[i], backend->device())
                                                     : q4_view(to, w.q4[i], backend->device());
      continue;
    }
    const size_t bytes = static_cast<size_t>(numel(s.shape)) * dtype_size(w.dtypes[i]);
    // Packed weights are made from host memory: the checkpoint's mapping, or `staging`.
    void* plain = w.packed[i] > 0 ? nullptr : to;
    const bool on_host = backend->device() == DeviceKind::kCpu;
    if (w.gguf != nullptr) {
      // Converted in host memory: in place where the device tier is the host's.
      if (plain == nullptr || !on_host) {
        staging.resize(bytes);
        plain = staging.data();
      }
      write_gguf(w, i, plain);
      if (!on_host && w.packed[i] == 0) backend->copy(to, plain, bytes);
    } else if (w.format == LoadFormat::kAuto && !s.normalize_rows) {
      if (plain != nullptr) backend->copy(to, w.sources[i].data, bytes);
      plain = const_cast<void*>(w.sources[i].data);
    } else {
      // Dummy and transformed weights are made in host memory: in place where the device tier
      // is the host's.
      if (plain == nullptr || !on_host) {
        staging.resize(bytes);
        plain = staging.data();
      }
      if (w.format == LoadFormat::kAuto) {
        std::memcpy(plain, w.sources[i].data, bytes);
      } else {
        bool is_norm = s.name.find("norm") != std::string::npos;
        fill_dummy(plain, w.dtypes[i], numel(s.shape), is_norm, w.seed * 1000003ull + i);
      }
      if (s.normalize_rows) normalize_rows(plain, w.dtypes[i], s.shape[0], s.shape[1]);
      if (!on_host && w.packed[i] == 0) backend->copy(to, plain, bytes);
    }
    TensorView view = make_view(to, w.dtypes[i], s.shape, backend->device());
    if (w.packed[i] > 0) {
      view = backend->pack_weight(make_view(plain, w.dtypes[i], s.shape, DeviceKind::kCpu), to);
    }
    out.tensors[static_cast<size_t>(s.slot)] = view;
  }
  if (unit == head_unit(config) && config.tie_word_embeddings) {
    TS_CHECK(embedding != nullptr) << "the tied lm_head needs the embedding unit";
    TensorView& head = out.tensors[kLmHead];
    head = embedding->tensors[kEmbedTokens];
    if (w.tied_head_packed)
      head = backend->pack_weight(head, dst + (w.offsets[w.specs.size()] - begin));
  }
  return out;
}

Result<std::unique_ptr<WeightProvider>> load_weights(const ModelConfig& config,
                                                     const std::filesystem::path& model_dir,
                                                     LoadFormat format, Backend* backend,
                                                     uint64_t seed,
                                                     const LoadProgressFn& on_progress) {
  TS_ASSIGN_OR_RETURN(ResolvedWeights w, resolve_weights(config, model_dir, format, backend, seed));
  const uint64_t total = w.total_bytes();
  auto arena_or = backend->allocate(total);
  if (!arena_or.is_ok()) {
    return arena_or.status().with_context("weights of " + format_bytes(total) +
                                          " in the device tier");
  }
  char* arena = static_cast<char*>(arena_or.value());
  std::vector<WeightUnit> units;
  for (int32_t u = 0; u < w.num_units(); ++u) {
    units.push_back(write_weight_unit(config, w, u, arena + w.unit_begin[static_cast<size_t>(u)],
                                      backend, units.empty() ? nullptr : &units[0]));
    if (on_progress) {
      on_progress({u + 1, w.num_units(), w.unit_begin[static_cast<size_t>(u) + 1], total});
    }
  }
  if (w.checkpoint != nullptr) {
    // Warn about tensors nobody reads (e.g. a checkpoint of another architecture).
    std::vector<std::string_view> used;
    for (size_t i = 0; i < w.specs.size(); ++i) {
      if (!w.specs[i].quantized) used.push_back(w.specs[i].name);
      for (const CheckpointTensor& t : w.q4_sources[i]) {
        if (t.entry != nullptr) used.push_back(t.entry->name);
      }
    }
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    size_t unused = w.checkpoint->names().size() - used.size();
    if (unused > 0)
      TS_LOG(Info) << "checkpoint has " << unused << " tensors the model does not use";
  }
  return std::unique_ptr<WeightProvider>(
      new ResidentWeightProvider(backend, arena, total, std::move(units)));
}

}  // namespace tierserve

#include "engine/model_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/logging.h"
#include "common/units.h"
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

// Whether `spec` is a weight that gemm multiplies by (and so may take a packed layout).
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

bool is_float(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace

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

std::vector<WeightSpec> weight_specs(const ModelConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  const int64_t q = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  std::vector<WeightSpec> specs;
  specs.push_back({kEmbeddingUnit, kEmbedTokens, "model.embed_tokens.weight", {v, d}});
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const int32_t u = layer_unit(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({u, kInputNorm, p + "input_layernorm.weight", {d}});
    specs.push_back({u, kQProj, p + "self_attn.q_proj.weight", {q, d}});
    specs.push_back({u, kKProj, p + "self_attn.k_proj.weight", {kv, d}});
    specs.push_back({u, kVProj, p + "self_attn.v_proj.weight", {kv, d}});
    specs.push_back({u, kOProj, p + "self_attn.o_proj.weight", {d, q}});
    if (c.qkv_bias) {
      specs.push_back({u, kQBias, p + "self_attn.q_proj.bias", {q}});
      specs.push_back({u, kKBias, p + "self_attn.k_proj.bias", {kv}});
      specs.push_back({u, kVBias, p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.o_bias) specs.push_back({u, kOBias, p + "self_attn.o_proj.bias", {d}});
    if (c.qk_norm) {
      specs.push_back({u, kQNorm, p + "self_attn.q_norm.weight", {c.head_dim}});
      specs.push_back({u, kKNorm, p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    specs.push_back({u, kPostAttnNorm, p + "post_attention_layernorm.weight", {d}});
    specs.push_back({u, kGateProj, p + "mlp.gate_proj.weight", {f, d}});
    specs.push_back({u, kUpProj, p + "mlp.up_proj.weight", {f, d}});
    specs.push_back({u, kDownProj, p + "mlp.down_proj.weight", {d, f}});
    if (c.mlp_bias) {
      specs.push_back({u, kGateBias, p + "mlp.gate_proj.bias", {f}});
      specs.push_back({u, kUpBias, p + "mlp.up_proj.bias", {f}});
      specs.push_back({u, kDownBias, p + "mlp.down_proj.bias", {d}});
    }
  }
  specs.push_back({head_unit(c), kFinalNorm, "model.norm.weight", {d}});
  if (!c.tie_word_embeddings) specs.push_back({head_unit(c), kLmHead, "lm_head.weight", {v, d}});
  return specs;
}

uint64_t checkpoint_weight_bytes(const ModelConfig& config) {
  uint64_t total = 0;
  for (const WeightSpec& s : weight_specs(config)) {
    total += static_cast<uint64_t>(numel(s.shape)) * dtype_size(config.dtype);
  }
  return total;
}

Result<std::unique_ptr<WeightProvider>> load_weights(const ModelConfig& config,
                                                     const std::filesystem::path& model_dir,
                                                     LoadFormat format, Backend* backend,
                                                     uint64_t seed) {
  const std::vector<WeightSpec> specs = weight_specs(config);

  // Resolve every tensor (and its dtype) before allocating anything.
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<CheckpointTensor> sources(specs.size());
  std::vector<DType> dtypes(specs.size(), config.dtype);
  if (format == LoadFormat::kAuto) {
    TS_ASSIGN_OR_RETURN(checkpoint, Checkpoint::open(model_dir));
    for (size_t i = 0; i < specs.size(); ++i) {
      TS_ASSIGN_OR_RETURN(sources[i], checkpoint->find(specs[i].name));
      const SafetensorsEntry& e = *sources[i].entry;
      const std::string file = sources[i].file->path().filename().string();
      if (!is_float(e.dtype)) {
        return unimplemented(file + ": tensor '" + e.name + "' has dtype " +
                             std::string(dtype_name(e.dtype)) + ", expected f32, f16 or bf16");
      }
      if (e.shape != specs[i].shape) {
        return invalid_argument(file + ": tensor '" + e.name + "' has shape " +
                                shape_string(e.shape) + ", expected " +
                                shape_string(specs[i].shape) + " from config.json");
      }
      dtypes[i] = e.dtype;
    }
  }

  // One arena for all units, each tensor 64-byte aligned. Sizes are summed in 128 bits: the
  // config's bounds keep each dimension sane, not necessarily their products. Gemm weights
  // take the backend's packed layout where it has one (Backend::packed_weight_bytes); a tied
  // lm_head then gets a packed copy of its own, as the embedding reads plain rows.
  std::vector<uint64_t> offsets(specs.size() + 1);
  std::vector<uint64_t> packed(specs.size() + 1, 0);  // packed bytes, 0 = plain
  unsigned __int128 total_wide = 0;
  const int64_t vocab = config.vocab_size, hidden = config.hidden_size;
  const uint64_t tied_head_packed =
      config.tie_word_embeddings ? backend->packed_weight_bytes(config.dtype, vocab, hidden) : 0;
  for (size_t i = 0; i <= specs.size(); ++i) {
    unsigned __int128 bytes = 0;
    std::string name = "lm_head (packed copy of the tied embedding)";
    std::vector<int64_t> shape = {vocab, hidden};
    if (i < specs.size()) {
      name = specs[i].name;
      shape = specs[i].shape;
      bytes = dtype_size(dtypes[i]);
      for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
      if (is_gemm_weight(config, specs[i]) && bytes <= kMaxWeightBytes) {
        packed[i] = backend->packed_weight_bytes(dtypes[i], shape[0], shape[1]);
        if (packed[i] > 0) bytes = packed[i];
      }
    } else {
      bytes = packed[i] = tied_head_packed;
    }
    offsets[i] = static_cast<uint64_t>(total_wide);
    total_wide = (total_wide + bytes + 63) / 64 * 64;
    if (total_wide > kMaxWeightBytes) {
      return invalid_argument("config.json: the model's weights would need more than " +
                              format_bytes(kMaxWeightBytes) + " (tensor '" + name + "' has shape " +
                              shape_string(shape) + ")");
    }
  }
  const uint64_t total = static_cast<uint64_t>(total_wide);
  auto arena_or = backend->allocate(total);
  if (!arena_or.is_ok()) {
    return arena_or.status().with_context("weights of " + format_bytes(total) +
                                          " in the device tier");
  }
  char* arena = static_cast<char*>(arena_or.value());

  std::vector<WeightUnit> units(static_cast<size_t>(head_unit(config)) + 1);
  units[kEmbeddingUnit].name = "embedding";
  units[kEmbeddingUnit].tensors.resize(kNumEmbeddingSlots);
  for (int32_t l = 0; l < config.num_layers; ++l) {
    units[static_cast<size_t>(layer_unit(l))].name = "layer " + std::to_string(l);
    units[static_cast<size_t>(layer_unit(l))].tensors.resize(kNumLayerSlots);
  }
  units[static_cast<size_t>(head_unit(config))].name = "head";
  units[static_cast<size_t>(head_unit(config))].tensors.resize(kNumHeadSlots);

  std::vector<uint8_t> staging;  // a dummy weight before packing
  for (size_t i = 0; i < specs.size(); ++i) {
    const WeightSpec& s = specs[i];
    void* dst = arena + offsets[i];
    const size_t bytes = static_cast<size_t>(numel(s.shape)) * dtype_size(dtypes[i]);
    // Packed weights are made from host memory: the checkpoint's mapping, or `staging`.
    void* plain = packed[i] > 0 ? nullptr : dst;
    if (format == LoadFormat::kAuto) {
      if (plain != nullptr) backend->copy(dst, sources[i].data, bytes);
      plain = const_cast<void*>(sources[i].data);
    } else {
      if (plain == nullptr) {
        staging.resize(bytes);
        plain = staging.data();
      }
      bool is_norm = s.name.find("norm") != std::string::npos;
      fill_dummy(plain, dtypes[i], numel(s.shape), is_norm, seed * 1000003ull + i);
    }
    TensorView view = make_view(dst, dtypes[i], s.shape, backend->device());
    if (packed[i] > 0) {
      view = backend->pack_weight(make_view(plain, dtypes[i], s.shape, DeviceKind::kCpu), dst);
    }
    units[static_cast<size_t>(s.unit)].tensors[static_cast<size_t>(s.slot)] = view;
  }
  if (config.tie_word_embeddings) {
    TensorView& head = units[static_cast<size_t>(head_unit(config))].tensors[kLmHead];
    head = units[kEmbeddingUnit].tensors[kEmbedTokens];
    if (tied_head_packed > 0) head = backend->pack_weight(head, arena + offsets[specs.size()]);
  }
  if (checkpoint != nullptr) {
    // Warn about tensors nobody reads (e.g. a checkpoint of another architecture).
    size_t unused = checkpoint->names().size() - specs.size();
    if (unused > 0)
      TS_LOG(Info) << "checkpoint has " << unused << " tensors the model does not use";
  }
  return std::unique_ptr<WeightProvider>(
      new ResidentWeightProvider(backend, arena, total, std::move(units)));
}

}  // namespace tierserve

#include "engine/model_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
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
  w.dtypes.assign(specs.size(), config.dtype);
  if (format == LoadFormat::kAuto) {
    TS_ASSIGN_OR_RETURN(w.checkpoint, Checkpoint::open(model_dir));
    for (size_t i = 0; i < specs.size(); ++i) {
      TS_ASSIGN_OR_RETURN(w.sources[i], w.checkpoint->find(specs[i].name));
      const SafetensorsEntry& e = *w.sources[i].entry;
      const std::string file = w.sources[i].file->path().filename().string();
      if (!is_float(e.dtype)) {
        return unimplemented(file + ": tensor '" + e.name + "' has dtype " +
                             std::string(dtype_name(e.dtype)) + ", expected f32, f16 or bf16");
      }
      if (e.shape != specs[i].shape) {
        return invalid_argument(file + ": tensor '" + e.name + "' has shape " +
                                shape_string(e.shape) + ", expected " +
                                shape_string(specs[i].shape) + " from config.json");
      }
      w.dtypes[i] = e.dtype;
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
      bytes = dtype_size(w.dtypes[i]);
      for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
      if (is_gemm_weight(config, specs[i]) && bytes <= kMaxWeightBytes) {
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
    const size_t bytes = static_cast<size_t>(numel(s.shape)) * dtype_size(w.dtypes[i]);
    // Packed weights are made from host memory: the checkpoint's mapping, or `staging`.
    void* plain = w.packed[i] > 0 ? nullptr : to;
    if (w.format == LoadFormat::kAuto) {
      if (plain != nullptr) backend->copy(to, w.sources[i].data, bytes);
      plain = const_cast<void*>(w.sources[i].data);
    } else {
      // Dummy weights are made in host memory: in place where the device tier is the host's.
      const bool on_host = backend->device() == DeviceKind::kCpu;
      if (plain == nullptr || !on_host) {
        staging.resize(bytes);
        plain = staging.data();
      }
      bool is_norm = s.name.find("norm") != std::string::npos;
      fill_dummy(plain, w.dtypes[i], numel(s.shape), is_norm, w.seed * 1000003ull + i);
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
    size_t unused = w.checkpoint->names().size() - w.specs.size();
    if (unused > 0)
      TS_LOG(Info) << "checkpoint has " << unused << " tensors the model does not use";
  }
  return std::unique_ptr<WeightProvider>(
      new ResidentWeightProvider(backend, arena, total, std::move(units)));
}

}  // namespace tierserve

#include "engine/gguf_model.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

#include "common/check.h"
#include "common/dtype.h"
#include "engine/ggml_quants.h"

namespace tierserve {
namespace {

struct GgufArchitecture {
  const char* gguf;  // general.architecture
  const char* hf;    // the Hugging Face architecture it stands for
  Architecture architecture;
};
constexpr GgufArchitecture kArchitectures[] = {
    {"llama", "LlamaForCausalLM", Architecture::kLlama},
    {"qwen2", "Qwen2ForCausalLM", Architecture::kQwen2},
    {"qwen3", "Qwen3ForCausalLM", Architecture::kQwen3},
};

// An optional integer key: `fallback` when absent; errors for a mistyped value.
Result<int64_t> optional_int(const GgufContents& c, const std::string& key, int64_t fallback) {
  if (c.find(key) == nullptr) return fallback;
  return c.get_i64(key);
}

Result<double> optional_float(const GgufContents& c, const std::string& key, double fallback) {
  if (c.find(key) == nullptr) return fallback;
  return c.get_f64(key);
}

// A positive int32 key (required when `fallback` < 0).
Result<int32_t> positive(const GgufContents& c, const std::string& key, int64_t fallback = -1) {
  if (fallback < 0 && c.find(key) == nullptr) {
    return invalid_argument(c.file_name + ": missing metadata key '" + key + "'");
  }
  TS_ASSIGN_OR_RETURN(int64_t v, optional_int(c, key, fallback));
  if (v <= 0 || v > (int64_t{1} << 24)) {
    return invalid_argument(c.file_name + ": metadata key '" + key + "' is " + std::to_string(v) +
                            ", expected a positive size");
  }
  return static_cast<int32_t>(v);
}

}  // namespace

Result<ModelConfig> gguf_model_config(const GgufFile& file) {
  const GgufContents& c = file.contents();
  const std::string& f = c.file_name;
  TS_ASSIGN_OR_RETURN(std::string arch, c.get_string("general.architecture"));
  ModelConfig config;
  config.gguf = true;
  bool known = false;
  for (const GgufArchitecture& a : kArchitectures) {
    if (arch == a.gguf) {
      config.architecture = a.architecture;
      config.architecture_name = a.hf;
      known = true;
    }
  }
  if (!known) {
    return unimplemented(f + ": general.architecture '" + arch +
                         "' is not supported (supported: llama, qwen2, qwen3)");
  }
  const std::string p = arch + ".";
  TS_ASSIGN_OR_RETURN(config.num_layers, positive(c, p + "block_count"));
  TS_ASSIGN_OR_RETURN(config.hidden_size, positive(c, p + "embedding_length"));
  TS_ASSIGN_OR_RETURN(config.intermediate_size, positive(c, p + "feed_forward_length"));
  TS_ASSIGN_OR_RETURN(config.num_heads, positive(c, p + "attention.head_count"));
  TS_ASSIGN_OR_RETURN(config.num_kv_heads,
                      positive(c, p + "attention.head_count_kv", config.num_heads));
  if (config.num_heads % config.num_kv_heads != 0) {
    return invalid_argument(f + ": " + p + "attention.head_count_kv " +
                            std::to_string(config.num_kv_heads) + " does not divide head_count " +
                            std::to_string(config.num_heads));
  }
  TS_ASSIGN_OR_RETURN(config.head_dim, positive(c, p + "attention.key_length",
                                                config.hidden_size / config.num_heads));
  if (config.head_dim % 2 != 0) {
    return invalid_argument(f + ": head dimension " + std::to_string(config.head_dim) + " is odd");
  }
  TS_ASSIGN_OR_RETURN(config.rotary_dim, positive(c, p + "rope.dimension_count", config.head_dim));
  if (config.rotary_dim != config.head_dim) {
    return unimplemented(f + ": " + p + "rope.dimension_count " +
                         std::to_string(config.rotary_dim) + " differs from the head dimension " +
                         std::to_string(config.head_dim));
  }
  TS_ASSIGN_OR_RETURN(config.max_position_embeddings, positive(c, p + "context_length", 2048));
  TS_ASSIGN_OR_RETURN(config.rms_norm_eps,
                      optional_float(c, p + "attention.layer_norm_rms_epsilon", 1e-5));
  TS_ASSIGN_OR_RETURN(config.rope_theta, optional_float(c, p + "rope.freq_base", 10000.0));
  if (c.find(p + "rope.scaling.type") != nullptr) {
    TS_ASSIGN_OR_RETURN(std::string type, c.get_string(p + "rope.scaling.type"));
    if (type == "linear") {
      config.rope_scaling.type = RopeScalingType::kLinear;
      TS_ASSIGN_OR_RETURN(config.rope_scaling.factor,
                          optional_float(c, p + "rope.scaling.factor", 1.0));
    } else if (type != "none") {
      return unimplemented(f + ": " + p + "rope.scaling.type '" + type +
                           "' is not supported (supported: none, linear)");
    }
  }
  if (const GgufTensorInfo* freqs = file.find("rope_freqs.weight")) {
    if (freqs->numel() != config.rotary_dim / 2 || freqs->type != GgmlType::kF32) {
      return invalid_argument(f + ": tensor 'rope_freqs.weight' must be F32 with " +
                              std::to_string(config.rotary_dim / 2) + " elements");
    }
    config.rope_scaling.type = RopeScalingType::kFactors;
    config.rope_scaling.freq_factors.resize(static_cast<size_t>(freqs->numel()));
    std::memcpy(config.rope_scaling.freq_factors.data(), file.data(*freqs), freqs->nbytes);
  }
  if (c.find(p + "attention.sliding_window") != nullptr) {
    return unimplemented(f + ": " + p + "attention.sliding_window is not supported for GGUF");
  }
  config.layer_sliding_window.assign(static_cast<size_t>(config.num_layers), 0);

  const GgufTensorInfo* embed = file.find("token_embd.weight");
  if (embed == nullptr || embed->ne.size() != 2) {
    return invalid_argument(f + ": tensor 'token_embd.weight' [vocab, hidden] is missing");
  }
  config.vocab_size = static_cast<int32_t>(embed->ne[1]);
  config.tie_word_embeddings = file.find("output.weight") == nullptr;
  config.qkv_bias = file.find("blk.0.attn_q.bias") != nullptr;
  config.o_bias = file.find("blk.0.attn_output.bias") != nullptr;
  config.qk_norm = config.architecture == Architecture::kQwen3;

  // The float dtype: of the matrices stored as floats (f16 when all are quantized).
  bool any_bf16 = false, any_f16 = false, any_f32 = false;
  for (const GgufTensorInfo& t : c.tensors) {
    if (t.ne.size() != 2) continue;
    any_bf16 = any_bf16 || t.type == GgmlType::kBF16;
    any_f16 = any_f16 || t.type == GgmlType::kF16;
    any_f32 = any_f32 || t.type == GgmlType::kF32;
  }
  config.dtype = any_bf16 ? DType::kBF16 : any_f16 || !any_f32 ? DType::kF16 : DType::kF32;

  TS_ASSIGN_OR_RETURN(int64_t bos, optional_int(c, "tokenizer.ggml.bos_token_id", -1));
  config.bos_token_id = bos >= 0 && bos < config.vocab_size ? static_cast<int32_t>(bos) : -1;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    TS_ASSIGN_OR_RETURN(int64_t id, optional_int(c, key, -1));
    if (id < 0) continue;
    if (id >= config.vocab_size) {
      return invalid_argument(f + ": " + key + " " + std::to_string(id) +
                              " is outside the vocabulary of " + std::to_string(config.vocab_size));
    }
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
        config.eos_token_ids.end()) {
      config.eos_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  return config;
}

void unpermute_gguf_rows(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_bytes,
                         int32_t heads) {
  const int64_t hd = rows / heads;
  TS_CHECK(hd * heads == rows && hd % 2 == 0) << rows << " rows in " << heads << " heads";
  const size_t row_bytes = static_cast<size_t>(cols) * elem_bytes;
  const char* src = static_cast<const char*>(in);
  char* dst = static_cast<char*>(out);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t j = 0; j < hd / 2; ++j) {
        const int64_t to = h * hd + s * (hd / 2) + j, from = h * hd + 2 * j + s;
        std::memcpy(dst + static_cast<size_t>(to) * row_bytes,
                    src + static_cast<size_t>(from) * row_bytes, row_bytes);
      }
    }
  }
}

Q4Source q4_0_to_q4(const uint8_t* data, int64_t rows, int64_t cols) {
  // block_q4_0: f16 d, then 16 bytes: element j in the low nibble of byte j, element 16 + j in
  // its high nibble; value (nibble - 8) * d.
  Q4Source s;
  s.n = rows;
  s.k = cols;
  s.group_size = 32;
  const int64_t blocks = cols / 32;
  s.q.resize(static_cast<size_t>(rows * cols));
  s.scale.resize(static_cast<size_t>(rows * blocks));
  s.zero.assign(s.scale.size(), 8);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = data + (r * blocks + b) * 18;
      std::memcpy(&s.scale[static_cast<size_t>(r * blocks + b)], block, 2);
      for (int j = 0; j < 16; ++j) {
        s.q[static_cast<size_t>(r * cols + b * 32 + j)] = block[2 + j] & 0xf;
        s.q[static_cast<size_t>(r * cols + b * 32 + 16 + j)] = block[2 + j] >> 4;
      }
    }
  }
  return s;
}

Q4Source q4_k_to_q4(const uint8_t* data, int64_t rows, int64_t cols) {
  // block_q4_K (ggml_quants.h): qs byte l of 32-byte chunk c holds element 64c + l of the
  // super-block in its low nibble (sub-block 2c) and element 64c + 32 + l in its high one.
  constexpr int64_t kBlockBytes = 144;
  Q4Source s;
  s.n = rows;
  s.k = cols;
  s.group_size = 32;
  const int64_t blocks = cols / 256, groups = cols / 32;
  s.q.resize(static_cast<size_t>(rows * cols));
  s.sub_scale.resize(static_cast<size_t>(rows * groups));
  s.zero.resize(s.sub_scale.size());
  s.supers.resize(static_cast<size_t>(rows * blocks * 2));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = data + (r * blocks + b) * kBlockBytes;
      std::memcpy(&s.supers[static_cast<size_t>((r * blocks + b) * 2)], block, 4);  // d, dmin
      for (int j = 0; j < 8; ++j) {
        const size_t g = static_cast<size_t>(r * groups + b * 8 + j);
        q4_k_scale_min(j, block + 4, &s.sub_scale[g], &s.zero[g]);
      }
      uint8_t* q = s.q.data() + r * cols + b * 256;
      const uint8_t* qs = block + 16;
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          q[64 * c + l] = qs[32 * c + l] & 0x0F;
          q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
      }
    }
  }
  return s;
}

void ggml_to_q8(GgmlType type, const uint8_t* data, const Q8Layout& l, void* dst) {
  const GgmlTypeInfo& info = *ggml_type_info(type);
  TS_CHECK(info.q8_group == l.group_size && info.q8_mins == l.with_mins &&
           l.k % info.block_size == 0)
      << info.name << " into groups of " << l.group_size << (l.with_mins ? " with mins" : "");
  std::memset(dst, 0, l.bytes);  // the alignment padding too: a unit's bytes are deterministic
  uint8_t* base = static_cast<uint8_t*>(dst);
  int8_t* values = static_cast<int8_t*>(dst);
  float* scales = reinterpret_cast<float*>(base + l.scales_offset);
  float* mins = l.with_mins ? reinterpret_cast<float*>(base + l.mins_offset) : nullptr;
  const int64_t blocks = l.n * l.k / info.block_size;
  const int64_t groups_per_block = info.block_size / info.q8_group;
  for (int64_t b = 0; b < blocks; ++b) {
    ggml_block_to_q8(type, data + b * info.block_bytes, values + b * info.block_size,
                     scales + b * groups_per_block,
                     mins != nullptr ? mins + b * groups_per_block : nullptr);
  }
}

}  // namespace tierserve

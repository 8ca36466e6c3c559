// The model's shape and options, read from a Hugging Face directory's config.json, with defaults
// from generation_config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace tierserve {

enum class Architecture : uint8_t {
  kLlama,     // LlamaForCausalLM
  kQwen2,     // Qwen2ForCausalLM: q/k/v bias
  kQwen3,     // Qwen3ForCausalLM: explicit head_dim, per-head q_norm/k_norm
  kMistral,   // MistralForCausalLM: sliding_window
  kBaichuan,  // BaichuanForCausalLM / BaiChuanForCausalLM: fused W_pack, rope or ALiBi, NormHead
  kChatGlm,   // ChatGLMModel / ChatGLMForConditionalGeneration (ChatGLM2/3, GLM-4): fused
              // query_key_value with bias, rope on half of each head in adjacent pairs
};

enum class RopeScalingType : uint8_t {
  kNone,     // default rope
  kLinear,   // positions divided by factor
  kLlama3,   // Llama 3.1 frequency-dependent scaling
  kFactors,  // inv_freq[i] divided by freq_factors[i] (a GGUF file's rope_freqs tensor)
};

// quantization_config of a 4-bit checkpoint (W4A16): its gemm weights load as Q4 blobs
// (kernels/q4_weight.h); embeddings, norms and lm_head stay in the config's float dtype.
enum class QuantMethod : uint8_t {
  kNone,
  kAwq,   // AutoAWQ GEMM layout: qweight [in, out / 8], qzeros, scales
  kGptq,  // GPTQ: qweight [in / 8, out], qzeros (zero - 1 in checkpoint_format gptq), g_idx
};
struct QuantConfig {
  QuantMethod method = QuantMethod::kNone;
  int32_t group_size = 0;   // inputs per scale group; 0 = the whole row (GPTQ's -1)
  bool desc_act = false;    // GPTQ act order: g_idx permutes the inputs
  int32_t zero_offset = 0;  // added to stored zeros (1 for GPTQ v1's zero - 1)
};

// rope_scaling (or transformers v5's rope_parameters). Fields unused by a type keep defaults.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;                              // linear and llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int32_t original_max_position_embeddings = 8192;  // llama3
  std::vector<float> freq_factors;                  // kFactors: [rotary_dim / 2]
};

struct ModelConfig {
  std::string architecture_name;  // as in config.json's "architectures"[0]
  Architecture architecture = Architecture::kLlama;
  int32_t vocab_size = 0;               // rows of embed_tokens and lm_head (ChatGLM:
                                        // padded_vocab_size)
  int32_t hidden_size = 0;              // model width d
  int32_t intermediate_size = 0;        // MLP width f
  int32_t num_layers = 0;               // num_hidden_layers
  int32_t num_heads = 0;                // num_attention_heads
  int32_t num_kv_heads = 0;             // num_key_value_heads; num_heads % num_kv_heads == 0
  int32_t head_dim = 0;                 // explicit head_dim, else hidden_size / num_heads
  int32_t max_position_embeddings = 0;  // the model's context length
  double rms_norm_eps = 1e-6;           // RMSNorm epsilon
  double rope_theta = 10000.0;          // rope base
  RopeScaling rope_scaling;             // rope_scaling / rope_parameters
  int32_t rotary_dim = 0;               // rotated elements at the start of each head, even,
                                        // <= head_dim (ChatGLM: head_dim / 2); 0 with alibi
  bool rope_interleaved = false;        // rope pairs (2i, 2i + 1) (ChatGLM) rather than
                                        // (i, i + rotary_dim / 2) (Hugging Face's rotate_half)
  bool alibi = false;                   // ALiBi biases instead of rope (Baichuan 13B shape)
  bool norm_head = false;               // lm_head rows L2-normalised at load (Baichuan2)
  bool tie_word_embeddings = false;     // lm_head shares embed_tokens' weight
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2; Llama/Qwen3 attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama/Qwen3 attention_bias)
  bool mlp_bias = false;  // gate/up/down projections have biases (Llama mlp_bias)
  bool qk_norm = false;   // per-head RMSNorm of q and k before rope (Qwen3)
  // Sliding window of each layer in tokens, 0 = full attention; size num_layers.
  std::vector<int32_t> layer_sliding_window;
  DType dtype = DType::kBF16;          // torch_dtype / dtype: the checkpoint's float type
  QuantConfig quant;                   // quantization_config; method kNone when absent
  bool gguf = false;                   // a GGUF file (engine/gguf_model.h): llama.cpp's tensor
                                       // names, its Q/K row order for architecture llama
  int32_t bos_token_id = -1;           // -1 when absent
  std::vector<int32_t> eos_token_ids;  // from generation_config.json, else config.json
  // Ids the tokenizer can produce (<= vocab_size). Logits of the ids beyond, the padding of a
  // padded vocabulary, are masked to -inf. 0 = all of vocab_size. Set by the engine from its
  // options, never from config.json.
  int32_t tokenizer_vocab_size = 0;
};

// Sampling defaults from generation_config.json (absent fields stay empty).
struct GenerationDefaults {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int32_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<int32_t> max_new_tokens;
};

// Defaults for absent keys follow Hugging Face's config classes for the Llama-family architectures
// (num_key_value_heads = num_attention_heads, head_dim = hidden_size / num_attention_heads,
// rope_theta 10000, rms_norm_eps 1e-6, tie_word_embeddings false, max_position_embeddings 2048
// for Llama, 131072 for Mistral, 32768 for Qwen2/Qwen3), with three choices of our own: dtype is
// bf16 when neither "dtype" nor "torch_dtype" is given; Mistral's sliding_window is off when
// absent (Hugging Face would use 4096); Qwen3's head_dim is hidden_size / num_attention_heads when
// absent (Hugging Face would use 128). rope_parameters.rope_theta wins over a top-level
// rope_theta, and a non-null rope_scaling over rope_parameters. A quantization_config must be
// AWQ (bits 4, zero_point, version gemm) or GPTQ (bits 4, checkpoint_format gptq or gptq_v2);
// other methods and settings are refused (kUnimplemented) naming the key.
//
// Reads `model_dir`/config.json and, when present, generation_config.json; or, when `model_dir`
// is a .gguf file, the file's metadata (engine/gguf_model.h). Errors name the file
// and the offending key: missing file, malformed JSON, missing or mistyped required key,
// inconsistent shape (e.g. num_heads not a multiple of num_kv_heads), unsupported architecture
// (the message lists the supported ones), unsupported hidden_act or rope type.
Result<ModelConfig> load_model_config(const std::filesystem::path& model_dir,
                                      GenerationDefaults* defaults = nullptr);

// Parses config.json text; `file_name` is used in error messages. Same checks as above.
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& file_name);

// Merges generation_config.json text into `config` (eos/bos) and `defaults` (may be null). On
// error neither is changed. do_sample is ignored (as vLLM does): the values given are defaults.
// Ranges: temperature >= 0, top_p in (0, 1], top_k >= -1, min_p in [0, 1],
// repetition_penalty > 0, max_new_tokens >= 1.
Status parse_generation_config(const std::string& json_text, const std::string& file_name,
                               ModelConfig* config, GenerationDefaults* defaults);

}  // namespace tierserve

#include "engine/model_config.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>
#include <system_error>

#include "common/check.h"
#include "common/file.h"
#include "engine/gguf_model.h"

namespace tierserve {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int64_t kMaxVocab = 1 << 24;  // tokens
constexpr int64_t kMaxWidth = 1 << 20;  // hidden_size, intermediate_size
constexpr int64_t kMaxLayers = 4096;    // num_hidden_layers
constexpr int64_t kMaxHeads = 1 << 14;  // num_attention_heads, num_key_value_heads
constexpr int64_t kMaxHeadDim = 4096;   // head_dim

struct ArchitectureName {
  std::string_view name;
  std::string_view model_type;  // config.json's "model_type", used when "architectures" is absent
  Architecture architecture;
};
constexpr ArchitectureName kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Architecture::kLlama},
    {"Qwen2ForCausalLM", "qwen2", Architecture::kQwen2},
    {"Qwen3ForCausalLM", "qwen3", Architecture::kQwen3},
    {"MistralForCausalLM", "mistral", Architecture::kMistral},
    {"BaichuanForCausalLM", "baichuan", Architecture::kBaichuan},
    {"BaiChuanForCausalLM", "", Architecture::kBaichuan},  // Baichuan-7B (v1)
    {"ChatGLMModel", "chatglm", Architecture::kChatGlm},
    {"ChatGLMForConditionalGeneration", "", Architecture::kChatGlm},
};
constexpr const char* kSupportedArchitectures =
    "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, "
    "BaichuanForCausalLM, BaiChuanForCausalLM, ChatGLMModel, ChatGLMForConditionalGeneration";

// Hugging Face's default max_window_layers for Qwen2/Qwen3.
constexpr int32_t kDefaultMaxWindowLayers = 28;

// A JSON value shortened for an error message; never throws (invalid UTF-8 is replaced).
std::string excerpt(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 80) text = text.substr(0, 80) + "...";
  return text;
}

// nlohmann's what() without its "[json.exception.parse_error.101] " prefix.
std::string json_error_text(const json::exception& e) {
  std::string what = e.what();
  if (size_t pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
  return what;
}

Result<json> parse_json_object(const std::string& text, const std::string& file) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return data_loss(file + ": malformed JSON: " + json_error_text(e));
  }
  if (!root.is_object()) return data_loss(file + ": expected a JSON object, got " + excerpt(root));
  return root;
}

// Typed access to one JSON object's keys, with errors that name the file and the key path.
// Absent keys and JSON null both count as "not set".
class Fields {
 public:
  Fields(const json& object, const std::string& file, std::string prefix = "")
      : object_(object), file_(file), prefix_(std::move(prefix)) {}

  // The value of `key`, or null when absent or JSON null.
  const json* get(std::string_view key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  Status error(std::string_view key, const std::string& what,
               StatusCode code = StatusCode::kInvalidArgument) const {
    return Status(code, file_ + ": key '" + prefix_ + std::string(key) + "': " + what);
  }
  Status missing(std::string_view key) const {
    return Status(StatusCode::kInvalidArgument,
                  file_ + ": missing required key '" + prefix_ + std::string(key) + "'");
  }

  // Reads an integer in [min, INT32_MAX]. Leaves *out alone when absent and not required.
  Status int32(std::string_view key, bool required, int64_t min, int32_t* out,
               int64_t max = INT32_MAX) const {
    const json* v = get(key);
    if (v == nullptr) return required ? missing(key) : Status::ok();
    int64_t value = 0;
    if (v->is_number_unsigned()) {
      value = v->get<uint64_t>() > uint64_t{INT32_MAX} ? int64_t{INT32_MAX} + 1
                                                       : static_cast<int64_t>(v->get<uint64_t>());
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else {
      return error(key, "expected an integer, got " + excerpt(*v));
    }
    if (value < min || value > max) {
      return error(key, "expected an integer in [" + std::to_string(min) + ", " +
                            std::to_string(max) + "], got " + excerpt(*v));
    }
    *out = static_cast<int32_t>(value);
    return Status::ok();
  }
  Status positive(std::string_view key, bool required, int32_t* out,
                  int64_t max = INT32_MAX) const {
    return int32(key, required, 1, out, max);
  }

  // Reads a finite number (integer or float). Leaves *out alone when absent and not required.
  Status number(std::string_view key, bool required, double* out) const {
    const json* v = get(key);
    if (v == nullptr) return required ? missing(key) : Status::ok();
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      return error(key, "expected a number, got " + excerpt(*v));
    }
    *out = v->get<double>();
    return Status::ok();
  }
  Status positive_number(std::string_view key, bool required, double* out) const {
    const json* v = get(key);
    TS_RETURN_IF_ERROR(number(key, required, out));
    if (v != nullptr && !(*out > 0))
      return error(key, "expected a positive number, got " + excerpt(*v));
    return Status::ok();
  }

  Status boolean(std::string_view key, bool* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_boolean()) return error(key, "expected true or false, got " + excerpt(*v));
    *out = v->get<bool>();
    return Status::ok();
  }

  Status string(std::string_view key, std::string* out) const {
    const json* v = get(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_string()) return error(key, "expected a string, got " + excerpt(*v));
    *out = v->get<std::string>();
    return Status::ok();
  }

  // A token id or a list of them (eos_token_id). Sets *present when the key is set.
  Status token_ids(std::string_view key, std::vector<int32_t>* out, bool* present) const {
    const json* v = get(key);
    *present = v != nullptr;
    if (v == nullptr) return Status::ok();
    const std::string expected = "expected a token id (integer >= 0) or a list of them, got ";
    std::vector<int32_t> ids;
    auto add = [&](const json& id) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return false;
      }
      ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      return true;
    };
    if (v->is_array()) {
      for (const json& id : *v) {
        if (!add(id)) return error(key, expected + excerpt(*v));
      }
    } else if (!add(*v)) {
      return error(key, expected + excerpt(*v));
    }
    *out = std::move(ids);
    return Status::ok();
  }

 private:
  const json& object_;
  const std::string& file_;
  std::string prefix_;
};

Status parse_architecture(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  if (const json* archs = fields.get("architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
      return fields.error("architectures",
                          "expected a non-empty list of strings, got " + excerpt(*archs));
    }
    config->architecture_name = (*archs)[0].get<std::string>();
  } else if (const json* type = fields.get("model_type"); type != nullptr && type->is_string()) {
    for (const ArchitectureName& a : kArchitectures) {
      if (!a.model_type.empty() && a.model_type == type->get_ref<const std::string&>() &&
          config->architecture_name.empty()) {
        config->architecture_name = a.name;
      }
    }
    if (config->architecture_name.empty()) {
      return unimplemented(
          file + ": model_type '" + type->get<std::string>() +
          "' is not supported (supported architectures: " + kSupportedArchitectures + ")");
    }
  } else {
    return fields.missing("architectures");
  }
  for (const ArchitectureName& a : kArchitectures) {
    if (a.name == config->architecture_name) {
      config->architecture = a.architecture;
      return Status::ok();
    }
  }
  return unimplemented(file + ": architecture '" + config->architecture_name +
                       "' is not supported (supported: " + kSupportedArchitectures + ")");
}

// One rope_scaling or rope_parameters block. `where` is its key ("rope_scaling").
Status parse_rope_block(const json& block, const std::string& file, const std::string& where,
                        bool type_required, RopeScaling* out) {
  Fields fields(block, file, where + ".");
  std::string type;
  TS_RETURN_IF_ERROR(fields.string("type", &type));       // legacy name
  TS_RETURN_IF_ERROR(fields.string("rope_type", &type));  // wins when both are present
  if (type.empty()) {
    if (type_required) return fields.missing("rope_type");
    type = "default";
  }
  RopeScaling rope;
  if (type == "default") {
    rope.type = RopeScalingType::kNone;
  } else if (type == "linear") {
    rope.type = RopeScalingType::kLinear;
    TS_RETURN_IF_ERROR(fields.positive_number("factor", true, &rope.factor));
  } else if (type == "llama3") {
    rope.type = RopeScalingType::kLlama3;
    TS_RETURN_IF_ERROR(fields.positive_number("factor", true, &rope.factor));
    TS_RETURN_IF_ERROR(fields.positive_number("low_freq_factor", true, &rope.low_freq_factor));
    TS_RETURN_IF_ERROR(fields.positive_number("high_freq_factor", true, &rope.high_freq_factor));
    TS_RETURN_IF_ERROR(fields.positive("original_max_position_embeddings", true,
                                       &rope.original_max_position_embeddings));
    if (rope.high_freq_factor <= rope.low_freq_factor) {
      return fields.error("high_freq_factor", "must be greater than low_freq_factor (" +
                                                  std::to_string(rope.low_freq_factor) + ")");
    }
  } else {
    return unimplemented(file + ": " + where + " type '" + type +
                         "' is not supported (supported: default, linear, llama3)");
  }
  *out = rope;
  return Status::ok();
}

// rope_theta and rope_scaling, or transformers v5's rope_parameters holding both.
Status parse_rope(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  TS_RETURN_IF_ERROR(fields.positive_number("rope_theta", false, &config->rope_theta));
  const json* params = fields.get("rope_parameters");
  if (params != nullptr) {
    if (!params->is_object()) {
      return fields.error("rope_parameters", "expected an object, got " + excerpt(*params));
    }
    Fields param_fields(*params, file, "rope_parameters.");
    for (const char* layer_type : {"full_attention", "sliding_attention"}) {
      if (const json* nested = param_fields.get(layer_type); nested && nested->is_object()) {
        return param_fields.error(layer_type, "per-layer-type rope parameters are not supported",
                                  StatusCode::kUnimplemented);
      }
    }
    TS_RETURN_IF_ERROR(param_fields.positive_number("rope_theta", false, &config->rope_theta));
  }
  if (const json* scaling = fields.get("rope_scaling")) {
    if (!scaling->is_object()) {
      return fields.error("rope_scaling", "expected an object or null, got " + excerpt(*scaling));
    }
    return parse_rope_block(*scaling, file, "rope_scaling", true, &config->rope_scaling);
  }
  if (params != nullptr) {
    return parse_rope_block(*params, file, "rope_parameters", false, &config->rope_scaling);
  }
  return Status::ok();
}

// Per-layer sliding windows, following Hugging Face: an explicit layer_types list wins;
// otherwise Mistral's window applies to every layer and Qwen2/Qwen3's (only with
// use_sliding_window) to layers >= max_window_layers. Llama has none.
Status parse_sliding_windows(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  config->layer_sliding_window.assign(config->num_layers, 0);
  if (config->architecture == Architecture::kLlama ||
      config->architecture == Architecture::kBaichuan ||
      config->architecture == Architecture::kChatGlm) {
    return Status::ok();
  }

  int32_t window = 0;
  TS_RETURN_IF_ERROR(fields.int32("sliding_window", false, 0, &window));
  bool use_sliding_window = config->architecture == Architecture::kMistral;
  if (config->architecture != Architecture::kMistral) {
    TS_RETURN_IF_ERROR(fields.boolean("use_sliding_window", &use_sliding_window));
  }
  if (!use_sliding_window) window = 0;

  if (const json* types = fields.get("layer_types")) {
    if (!types->is_array() || types->size() != static_cast<size_t>(config->num_layers)) {
      return fields.error("layer_types", "expected a list of " +
                                             std::to_string(config->num_layers) +
                                             " strings (one per layer), got " + excerpt(*types));
    }
    for (int32_t i = 0; i < config->num_layers; ++i) {
      const json& type = (*types)[i];
      if (type == "sliding_attention") {
        config->layer_sliding_window[i] = window;
      } else if (type != "full_attention") {
        return fields.error("layer_types",
                            "layer " + std::to_string(i) + " has type " + excerpt(type) +
                                " (supported: \"full_attention\", \"sliding_attention\")",
                            StatusCode::kUnimplemented);
      }
    }
    return Status::ok();
  }
  int32_t first_sliding = 0;
  if (config->architecture != Architecture::kMistral) {
    first_sliding = kDefaultMaxWindowLayers;
    TS_RETURN_IF_ERROR(fields.int32("max_window_layers", false, 0, &first_sliding));
  }
  for (int32_t i = first_sliding; i < config->num_layers; ++i) {
    config->layer_sliding_window[i] = window;
  }
  return Status::ok();
}

Status parse_dtype_field(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  const char* key = fields.get("dtype") != nullptr ? "dtype" : "torch_dtype";
  std::string name;
  TS_RETURN_IF_ERROR(fields.string(key, &name));
  if (name.empty()) return Status::ok();  // absent: keep the bf16 default
  std::string_view bare = name;
  if (bare.substr(0, 6) == "torch.") bare.remove_prefix(6);
  DType dtype;
  if (!parse_dtype(bare, &dtype) ||
      (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16)) {
    return fields.error(key,
                        "dtype '" + name +
                            "' is not supported (expected float32, float16 or "
                            "bfloat16)",
                        StatusCode::kUnimplemented);
  }
  config->dtype = dtype;
  return Status::ok();
}

// ChatGLM2/3 and GLM-4 (THUDM's ChatGLMConfig): their own key names, and switches whose
// unpublished settings are refused.
Status parse_chatglm(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  TS_RETURN_IF_ERROR(fields.positive("num_layers", true, &config->num_layers, kMaxLayers));
  config->vocab_size = 0;
  TS_RETURN_IF_ERROR(fields.positive("vocab_size", false, &config->vocab_size, kMaxVocab));
  TS_RETURN_IF_ERROR(fields.positive("padded_vocab_size", config->vocab_size == 0,
                                     &config->vocab_size, kMaxVocab));
  TS_RETURN_IF_ERROR(fields.positive("hidden_size", true, &config->hidden_size, kMaxWidth));
  TS_RETURN_IF_ERROR(
      fields.positive("ffn_hidden_size", true, &config->intermediate_size, kMaxWidth));
  TS_RETURN_IF_ERROR(fields.positive("num_attention_heads", true, &config->num_heads, kMaxHeads));
  TS_RETURN_IF_ERROR(fields.positive("kv_channels", true, &config->head_dim, kMaxHeadDim));
  bool multi_query = false;
  TS_RETURN_IF_ERROR(fields.boolean("multi_query_attention", &multi_query));
  config->num_kv_heads = config->num_heads;
  if (multi_query) {
    TS_RETURN_IF_ERROR(
        fields.positive("multi_query_group_num", true, &config->num_kv_heads, kMaxHeads));
  }
  if (config->num_heads % config->num_kv_heads != 0) {
    return fields.error("multi_query_group_num", std::to_string(config->num_kv_heads) +
                                                     " does not divide num_attention_heads " +
                                                     std::to_string(config->num_heads));
  }
  if (config->head_dim % 4 != 0) {
    return fields.error("kv_channels", std::to_string(config->head_dim) +
                                           " is not a multiple of 4 (rope turns pairs of its "
                                           "first half)");
  }
  config->max_position_embeddings = 2048;
  TS_RETURN_IF_ERROR(fields.positive("seq_length", false, &config->max_position_embeddings));
  config->rms_norm_eps = 1e-5;
  TS_RETURN_IF_ERROR(fields.positive_number("layernorm_epsilon", false, &config->rms_norm_eps));
  double rope_ratio = 1.0;
  TS_RETURN_IF_ERROR(fields.positive_number("rope_ratio", false, &rope_ratio));
  config->rope_theta = 10000.0 * rope_ratio;
  config->rotary_dim = config->head_dim / 2;
  config->rope_interleaved = true;
  bool bias_linear = false, qkv_bias = false;  // ChatGLMConfig's defaults
  TS_RETURN_IF_ERROR(fields.boolean("add_bias_linear", &bias_linear));
  TS_RETURN_IF_ERROR(fields.boolean("add_qkv_bias", &qkv_bias));
  config->qkv_bias = qkv_bias || bias_linear;
  config->o_bias = config->mlp_bias = bias_linear;
  // Switches every published ChatGLM2/3 and GLM-4 model sets one way.
  struct Required {
    const char* key;
    bool value;
    const char* meaning;
  };
  for (const Required& r : {Required{"rmsnorm", true, "LayerNorm instead of RMSNorm"},
                            Required{"post_layer_norm", true, "no final norm"},
                            Required{"apply_residual_connection_post_layernorm", false,
                                     "the residual taken after the norm"}}) {
    bool value = r.value;
    TS_RETURN_IF_ERROR(fields.boolean(r.key, &value));
    if (value != r.value) {
      return fields.error(
          r.key, std::string(value ? "true" : "false") + " (" + r.meaning + ") is not supported",
          StatusCode::kUnimplemented);
    }
  }
  return Status::ok();
}

// The Llama-style shape keys (every architecture but ChatGLM).
Status parse_llama_shape(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  ModelConfig& c = *config;
  TS_RETURN_IF_ERROR(fields.positive("vocab_size", true, &c.vocab_size, kMaxVocab));
  TS_RETURN_IF_ERROR(fields.positive("hidden_size", true, &c.hidden_size, kMaxWidth));
  TS_RETURN_IF_ERROR(fields.positive("intermediate_size", true, &c.intermediate_size, kMaxWidth));
  TS_RETURN_IF_ERROR(fields.positive("num_hidden_layers", true, &c.num_layers, kMaxLayers));
  TS_RETURN_IF_ERROR(fields.positive("num_attention_heads", true, &c.num_heads, kMaxHeads));
  c.num_kv_heads = c.num_heads;
  TS_RETURN_IF_ERROR(fields.positive("num_key_value_heads", false, &c.num_kv_heads, kMaxHeads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return fields.error("num_key_value_heads", std::to_string(c.num_kv_heads) +
                                                   " does not divide " + "num_attention_heads " +
                                                   std::to_string(c.num_heads));
  }
  if (fields.get("head_dim") != nullptr) {
    TS_RETURN_IF_ERROR(fields.positive("head_dim", true, &c.head_dim, kMaxHeadDim));
  } else if (c.hidden_size % c.num_heads != 0) {
    return fields.error("hidden_size", std::to_string(c.hidden_size) +
                                           " is not a multiple of num_attention_heads " +
                                           std::to_string(c.num_heads) +
                                           " and head_dim is not given");
  } else {
    c.head_dim = c.hidden_size / c.num_heads;
    if (c.head_dim > kMaxHeadDim) {
      return fields.error("hidden_size", "gives head_dim " + std::to_string(c.head_dim) +
                                             ", more than " + std::to_string(kMaxHeadDim));
    }
  }
  return Status::ok();
}

// Baichuan's context length and vLLM's rules for rope/ALiBi and NormHead (load_model_config
// refines the last two from the checkpoint's own modeling_baichuan.py).
Status parse_baichuan(const json& root, const std::string& file, ModelConfig* config) {
  Fields fields(root, file);
  config->max_position_embeddings = 4096;
  TS_RETURN_IF_ERROR(
      fields.positive("max_position_embeddings", false, &config->max_position_embeddings));
  TS_RETURN_IF_ERROR(fields.positive("model_max_length", false, &config->max_position_embeddings));
  config->alibi = config->architecture_name != "BaiChuanForCausalLM" && config->hidden_size != 4096;
  config->norm_head = config->vocab_size == 125696;
  return Status::ok();
}

// Refines Baichuan's rope/ALiBi and NormHead from the checkpoint's own modeling_baichuan.py:
// the 13B shape builds ALiBi masks (_get_interleave), the 7B shape a RotaryEmbedding; Baichuan2
// defines NormHead. Without the file the config's rules stay.
Status apply_baichuan_code(const fs::path& model_dir, ModelConfig* config) {
  const fs::path code_path = model_dir / "modeling_baichuan.py";
  std::error_code ec;
  if (!fs::exists(code_path, ec)) return Status::ok();
  TS_ASSIGN_OR_RETURN(std::string code, read_file(code_path));
  const bool alibi = code.find("_get_interleave") != std::string::npos;
  const bool rope = code.find("RotaryEmbedding") != std::string::npos;
  if (alibi == rope) {
    return unimplemented(code_path.string() +
                         ": cannot tell whether the model uses rope (a RotaryEmbedding) or "
                         "ALiBi (_get_interleave)");
  }
  config->alibi = alibi;
  config->rotary_dim = alibi ? 0 : config->head_dim;
  config->norm_head = code.find("class NormHead") != std::string::npos;
  return Status::ok();
}

// quantization_config: AWQ (GEMM) or GPTQ, 4 bits.
Status parse_quantization(const json& quant, const std::string& file, QuantConfig* out) {
  if (!quant.is_object()) {
    return Fields(json::object(), file)
        .error("quantization_config", "expected an object, got " + excerpt(quant));
  }
  Fields fields(quant, file, "quantization_config.");
  std::string method;
  TS_RETURN_IF_ERROR(fields.string("quant_method", &method));
  QuantConfig q;
  if (method == "awq") {
    q.method = QuantMethod::kAwq;
  } else if (method == "gptq") {
    q.method = QuantMethod::kGptq;
  } else {
    return fields.error("quant_method", "'" + method + "' is not supported (supported: awq, gptq)",
                        StatusCode::kUnimplemented);
  }
  int32_t bits = 0;
  TS_RETURN_IF_ERROR(fields.int32(
      q.method == QuantMethod::kAwq && fields.get("bits") == nullptr ? "w_bit" : "bits", true, 1,
      &bits));
  if (bits != 4) {
    return fields.error("bits", std::to_string(bits) + "-bit weights are not supported (only 4)",
                        StatusCode::kUnimplemented);
  }
  int32_t group_size = 128;
  const char* group_key = q.method == QuantMethod::kAwq && fields.get("group_size") == nullptr
                              ? "q_group_size"
                              : "group_size";
  TS_RETURN_IF_ERROR(fields.int32(group_key, false, -1, &group_size));
  if (group_size == 0 || (group_size > 0 && group_size % 32 != 0) ||
      (group_size == -1 && q.method == QuantMethod::kAwq)) {
    return fields.error(group_key,
                        std::to_string(group_size) +
                            " is not supported (a multiple of 32, or -1 for GPTQ's whole rows)",
                        StatusCode::kUnimplemented);
  }
  q.group_size = group_size < 0 ? 0 : group_size;
  if (q.method == QuantMethod::kAwq) {
    bool zero_point = true;
    TS_RETURN_IF_ERROR(fields.boolean("zero_point", &zero_point));
    std::string version = "gemm";
    TS_RETURN_IF_ERROR(fields.string("version", &version));
    for (char& c : version) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!zero_point || version != "gemm") {
      return fields.error(zero_point ? "version" : "zero_point",
                          "only AWQ's GEMM layout with zero points is supported",
                          StatusCode::kUnimplemented);
    }
  } else {
    TS_RETURN_IF_ERROR(fields.boolean("desc_act", &q.desc_act));
    std::string format = "gptq";
    TS_RETURN_IF_ERROR(fields.string("checkpoint_format", &format));
    if (format != "gptq" && format != "gptq_v2") {
      return fields.error("checkpoint_format",
                          "'" + format + "' is not supported (supported: gptq, gptq_v2)",
                          StatusCode::kUnimplemented);
    }
    q.zero_offset = format == "gptq" ? 1 : 0;
  }
  *out = q;
  return Status::ok();
}

}  // namespace

Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& file_name) {
  const std::string& file = file_name;
  TS_ASSIGN_OR_RETURN(json root, parse_json_object(json_text, file));
  ModelConfig config;
  TS_RETURN_IF_ERROR(parse_architecture(root, file, &config));
  Fields fields(root, file);

  if (const json* quant = fields.get("quantization_config")) {
    TS_RETURN_IF_ERROR(parse_quantization(*quant, file, &config.quant));
  }
  const bool chatglm = config.architecture == Architecture::kChatGlm;
  if (!chatglm) {  // ChatGLM's MLP is SwiGLU by construction and has no hidden_act
    std::string hidden_act = "silu";
    TS_RETURN_IF_ERROR(fields.string("hidden_act", &hidden_act));
    if (hidden_act != "silu") {
      return fields.error("hidden_act", "'" + hidden_act + "' is not supported (expected 'silu')",
                          StatusCode::kUnimplemented);
    }
  }

  // Upper bounds far above any published model keep every size product (and the arena offsets
  // computed from them) well inside 64 bits, so a hostile config cannot overflow them.
  TS_RETURN_IF_ERROR(chatglm ? parse_chatglm(root, file, &config)
                             : parse_llama_shape(root, file, &config));
  if (config.head_dim % 2 != 0) {
    return fields.error("head_dim", std::to_string(config.head_dim) + " is odd (rope needs pairs)");
  }

  // Hugging Face's defaults for the Llama-family architectures.
  switch (config.architecture) {
    case Architecture::kBaichuan:
    case Architecture::kChatGlm:
      break;
    case Architecture::kLlama:
      config.max_position_embeddings = 2048;
      break;
    case Architecture::kMistral:
      config.max_position_embeddings = 4096 * 32;
      break;
    case Architecture::kQwen2:
    case Architecture::kQwen3:
      config.max_position_embeddings = 32768;
      break;
  }
  if (config.architecture == Architecture::kBaichuan) {
    TS_RETURN_IF_ERROR(parse_baichuan(root, file, &config));
  } else if (!chatglm) {
    TS_RETURN_IF_ERROR(
        fields.positive("max_position_embeddings", false, &config.max_position_embeddings));
  }
  if (!chatglm) {
    TS_RETURN_IF_ERROR(fields.positive_number("rms_norm_eps", false, &config.rms_norm_eps));
    TS_RETURN_IF_ERROR(parse_rope(root, file, &config));
    config.rotary_dim = config.alibi ? 0 : config.head_dim;
  }
  TS_RETURN_IF_ERROR(fields.boolean("tie_word_embeddings", &config.tie_word_embeddings));
  if (config.norm_head && config.tie_word_embeddings) {
    return fields.error("tie_word_embeddings", "a NormHead (Baichuan2) cannot be tied",
                        StatusCode::kUnimplemented);
  }

  bool attention_bias = false;
  bool mlp_bias = false;
  TS_RETURN_IF_ERROR(fields.boolean("attention_bias", &attention_bias));
  TS_RETURN_IF_ERROR(fields.boolean("mlp_bias", &mlp_bias));
  switch (config.architecture) {
    case Architecture::kLlama:  // every projection follows attention_bias / mlp_bias
      config.qkv_bias = config.o_bias = attention_bias;
      config.mlp_bias = mlp_bias;
      break;
    case Architecture::kQwen2:  // q/k/v always have biases, o_proj never
      config.qkv_bias = true;
      break;
    case Architecture::kQwen3:  // q/k/v/o follow attention_bias; per-head q/k norms
      config.qkv_bias = config.o_bias = attention_bias;
      config.qk_norm = true;
      break;
    case Architecture::kMistral:  // no biases
    case Architecture::kBaichuan:
    case Architecture::kChatGlm:  // parse_chatglm set them
      break;
  }
  TS_RETURN_IF_ERROR(parse_sliding_windows(root, file, &config));
  TS_RETURN_IF_ERROR(parse_dtype_field(root, file, &config));

  TS_RETURN_IF_ERROR(fields.int32("bos_token_id", false, 0, &config.bos_token_id));
  bool present = false;
  TS_RETURN_IF_ERROR(fields.token_ids("eos_token_id", &config.eos_token_ids, &present));
  return config;
}

Status parse_generation_config(const std::string& json_text, const std::string& file_name,
                               ModelConfig* config, GenerationDefaults* defaults) {
  TS_CHECK(config != nullptr);
  const std::string& file = file_name;
  TS_ASSIGN_OR_RETURN(json root, parse_json_object(json_text, file));
  Fields fields(root, file);

  ModelConfig merged = *config;
  GenerationDefaults gen = defaults != nullptr ? *defaults : GenerationDefaults();
  bool present = false;
  std::vector<int32_t> eos;
  TS_RETURN_IF_ERROR(fields.token_ids("eos_token_id", &eos, &present));
  if (present) merged.eos_token_ids = std::move(eos);
  TS_RETURN_IF_ERROR(fields.int32("bos_token_id", false, 0, &merged.bos_token_id));

  // Each optional value with its valid range; do_sample is ignored, as vLLM does.
  auto read_double = [&](std::string_view key, double lo, double hi, bool lo_open,
                         std::optional<double>* out) -> Status {
    if (fields.get(key) == nullptr) return Status::ok();
    double value = 0;
    TS_RETURN_IF_ERROR(fields.number(key, true, &value));
    if (value < lo || value > hi || (lo_open && value == lo)) {
      return fields.error(key, "expected a number in " + std::string(lo_open ? "(" : "[") +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                   excerpt(*fields.get(key)));
    }
    *out = value;
    return Status::ok();
  };
  auto read_int = [&](std::string_view key, int64_t min, std::optional<int32_t>* out) -> Status {
    int32_t value = 0;
    if (fields.get(key) == nullptr) return Status::ok();
    TS_RETURN_IF_ERROR(fields.int32(key, true, min, &value));
    *out = value;
    return Status::ok();
  };
  constexpr double kMax = std::numeric_limits<double>::max();
  TS_RETURN_IF_ERROR(read_double("temperature", 0, kMax, false, &gen.temperature));
  TS_RETURN_IF_ERROR(read_double("top_p", 0, 1, true, &gen.top_p));
  TS_RETURN_IF_ERROR(read_int("top_k", -1, &gen.top_k));
  TS_RETURN_IF_ERROR(read_double("min_p", 0, 1, false, &gen.min_p));
  TS_RETURN_IF_ERROR(read_double("repetition_penalty", 0, kMax, true, &gen.repetition_penalty));
  TS_RETURN_IF_ERROR(read_int("max_new_tokens", 1, &gen.max_new_tokens));

  *config = std::move(merged);
  if (defaults != nullptr) *defaults = gen;
  return Status::ok();
}

Result<ModelConfig> load_model_config(const fs::path& model_dir, GenerationDefaults* defaults) {
  if (const auto gguf = gguf_file_of(model_dir)) {
    TS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(*gguf));
    return gguf_model_config(*file);
  }
  const fs::path config_path = model_dir / "config.json";
  std::error_code ec;
  if (!fs::exists(config_path, ec)) return not_found(config_path.string() + ": not found");
  TS_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
  TS_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(text, config_path.string()));
  if (config.architecture == Architecture::kBaichuan) {
    TS_RETURN_IF_ERROR(apply_baichuan_code(model_dir, &config));
  }

  const fs::path gen_path = model_dir / "generation_config.json";
  if (fs::exists(gen_path, ec)) {
    TS_ASSIGN_OR_RETURN(std::string gen_text, read_file(gen_path));
    TS_RETURN_IF_ERROR(parse_generation_config(gen_text, gen_path.string(), &config, defaults));
  }
  return config;
}

}  // namespace tierserve

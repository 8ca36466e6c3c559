#include "engine/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kFile = "config.json";

// A small but complete Llama config, as transformers v4 saves it.
json llama_config() {
  return json{
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", 128256},
      {"hidden_size", 4096},
      {"intermediate_size", 14336},
      {"num_hidden_layers", 4},
      {"num_attention_heads", 32},
      {"num_key_value_heads", 8},
      {"max_position_embeddings", 8192},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"rope_scaling", nullptr},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"bos_token_id", 128000},
      {"eos_token_id", 128001},
  };
}

// A Qwen3-style config: explicit head_dim different from hidden_size / heads.
json qwen3_config() {
  return json{
      {"architectures", {"Qwen3ForCausalLM"}},
      {"vocab_size", 151936},
      {"hidden_size", 1024},
      {"intermediate_size", 3072},
      {"num_hidden_layers", 4},
      {"num_attention_heads", 16},
      {"num_key_value_heads", 8},
      {"head_dim", 128},
      {"max_position_embeddings", 40960},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 1000000},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"tie_word_embeddings", true},
      {"use_sliding_window", false},
      {"sliding_window", nullptr},
      {"max_window_layers", 28},
      {"torch_dtype", "bfloat16"},
      {"bos_token_id", 151643},
      {"eos_token_id", 151645},
  };
}

// ChatGLM3-6B's config.json (THUDM's ChatGLMConfig keys).
json chatglm3_config() {
  return json{
      {"architectures", {"ChatGLMModel"}},
      {"model_type", "chatglm"},
      {"add_bias_linear", false},
      {"add_qkv_bias", true},
      {"apply_residual_connection_post_layernorm", false},
      {"ffn_hidden_size", 13696},
      {"hidden_size", 4096},
      {"kv_channels", 128},
      {"layernorm_epsilon", 1e-05},
      {"multi_query_attention", true},
      {"multi_query_group_num", 2},
      {"num_attention_heads", 32},
      {"num_layers", 28},
      {"original_rope", true},
      {"padded_vocab_size", 65024},
      {"post_layer_norm", true},
      {"rmsnorm", true},
      {"seq_length", 8192},
      {"torch_dtype", "float16"},
      {"eos_token_id", 2},
      {"pad_token_id", 0},
  };
}

// Baichuan2-7B's config.json.
json baichuan2_7b_config() {
  return json{
      {"architectures", {"BaichuanForCausalLM"}},
      {"model_type", "baichuan"},
      {"hidden_act", "silu"},
      {"hidden_size", 4096},
      {"intermediate_size", 11008},
      {"max_position_embeddings", 4096},
      {"model_max_length", 4096},
      {"num_attention_heads", 32},
      {"num_hidden_layers", 32},
      {"rms_norm_eps", 1e-06},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"vocab_size", 125696},
      {"z_loss_weight", 0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
}

Result<ModelConfig> parse(const json& config) { return parse_model_config(config.dump(), kFile); }

// Expects a one-line error of `code` that starts with the file name and contains `fragments`.
void expect_error(const Status& status, StatusCode code, std::vector<std::string> fragments,
                  const std::string& file = kFile) {
  EXPECT_EQ(status.code(), code) << status.to_string();
  EXPECT_EQ(status.message().rfind(file + ": ", 0), 0u) << status.message();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  for (const std::string& f : fragments) EXPECT_THAT(status.message(), HasSubstr(f));
}

void expect_config_error(const json& config, StatusCode code, std::vector<std::string> fragments) {
  auto result = parse(config);
  ASSERT_FALSE(result.is_ok()) << config.dump();
  expect_error(result.status(), code, fragments);
}

// ---- Architectures ---------------------------------------------------------------------------

TEST(ModelConfigTest, ReadsALlamaConfig) {
  auto result = parse(llama_config());
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_THAT(c.layer_sliding_window, ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001));
}

TEST(ModelConfigTest, LlamaBiasesFollowAttentionBiasAndMlpBias) {
  json config = llama_config();
  config["attention_bias"] = true;
  config["mlp_bias"] = true;
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_TRUE(result.value().qkv_bias);
  EXPECT_TRUE(result.value().o_bias);
  EXPECT_TRUE(result.value().mlp_bias);
}

TEST(ModelConfigTest, AppliesDefaultsForOptionalKeys) {
  json config = {{"architectures", {"LlamaForCausalLM"}},
                 {"vocab_size", 100},
                 {"hidden_size", 64},
                 {"intermediate_size", 128},
                 {"num_hidden_layers", 2},
                 {"num_attention_heads", 4}};
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_THAT(c.layer_sliding_window, ElementsAre(0, 0));

  config["head_dim"] = nullptr;  // explicit null means hidden_size / num_heads too
  config["num_key_value_heads"] = nullptr;
  ASSERT_TRUE(parse(config).is_ok());
  EXPECT_EQ(parse(config).value().head_dim, 16);
  EXPECT_EQ(parse(config).value().num_kv_heads, 4);
}

TEST(ModelConfigTest, ReadsAQwen2Config) {
  json config = llama_config();
  config["architectures"] = {"Qwen2ForCausalLM"};
  config["attention_bias"] = false;  // ignored: Qwen2 always has q/k/v biases
  config["mlp_bias"] = true;         // ignored: Qwen2's MLP has none
  config["use_sliding_window"] = false;
  config["sliding_window"] = 4096;
  config["max_window_layers"] = 2;
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_THAT(c.layer_sliding_window, ElementsAre(0, 0, 0, 0));  // use_sliding_window is false

  config["use_sliding_window"] = true;
  auto sliding = parse(config);
  ASSERT_TRUE(sliding.is_ok()) << sliding.status().to_string();
  EXPECT_THAT(sliding.value().layer_sliding_window, ElementsAre(0, 0, 4096, 4096));

  config.erase("max_window_layers");  // Hugging Face's default is 28: no layer of 4 slides
  EXPECT_THAT(parse(config).value().layer_sliding_window, ElementsAre(0, 0, 0, 0));
}

TEST(ModelConfigTest, ReadsAQwen3Config) {
  auto result = parse(qwen3_config());
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.architecture, Architecture::kQwen3);
  EXPECT_EQ(c.head_dim, 128);  // not hidden_size / num_heads = 64
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_THAT(c.layer_sliding_window, Each(0));

  json biased = qwen3_config();
  biased["attention_bias"] = true;
  auto with_bias = parse(biased);
  ASSERT_TRUE(with_bias.is_ok());
  EXPECT_TRUE(with_bias.value().qkv_bias);
  EXPECT_TRUE(with_bias.value().o_bias);
}

TEST(ModelConfigTest, ReadsAMistralConfigWithItsSlidingWindow) {
  json config = llama_config();
  config["architectures"] = {"MistralForCausalLM"};
  config["attention_bias"] = true;  // ignored: Mistral has no biases
  config["sliding_window"] = 4096;
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.architecture, Architecture::kMistral);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_THAT(c.layer_sliding_window, ElementsAre(4096, 4096, 4096, 4096));

  config["sliding_window"] = nullptr;
  EXPECT_THAT(parse(config).value().layer_sliding_window, Each(0));
  config.erase("sliding_window");
  EXPECT_THAT(parse(config).value().layer_sliding_window, Each(0));
}

TEST(ModelConfigTest, LayerTypesListWins) {
  json config = qwen3_config();
  config["use_sliding_window"] = true;
  config["sliding_window"] = 512;
  config["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                           "full_attention"};
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_THAT(result.value().layer_sliding_window, ElementsAre(512, 0, 512, 0));

  config["use_sliding_window"] = false;  // Hugging Face then drops the window altogether
  EXPECT_THAT(parse(config).value().layer_sliding_window, Each(0));

  json mistral = llama_config();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = 256;
  mistral["layer_types"] = {"full_attention", "full_attention", "sliding_attention",
                            "sliding_attention"};
  EXPECT_THAT(parse(mistral).value().layer_sliding_window, ElementsAre(0, 0, 256, 256));

  config["layer_types"] = {"full_attention", "full_attention"};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'layer_types'", "expected a list of 4 strings"});
  config["layer_types"] = {"full_attention", "full_attention", "chunked_attention",
                           "full_attention"};
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"key 'layer_types'", "layer 2", "\"chunked_attention\""});
}

TEST(ModelConfigTest, FallsBackToModelType) {
  json config = llama_config();
  config.erase("architectures");
  config["model_type"] = "mistral";
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_EQ(result.value().architecture, Architecture::kMistral);
  EXPECT_EQ(result.value().architecture_name, "MistralForCausalLM");

  config["model_type"] = "gemma";
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"model_type 'gemma' is not supported", "LlamaForCausalLM"});
  config.erase("model_type");
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"missing required key 'architectures'"});
}

TEST(ModelConfigTest, RejectsUnsupportedArchitecturesListingTheSupportedOnes) {
  json config = llama_config();
  config["architectures"] = {"GemmaForCausalLM"};
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"architecture 'GemmaForCausalLM' is not supported",
                       "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM",
                       "BaichuanForCausalLM", "ChatGLMModel"});
  config["architectures"] = json::array();
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'architectures'", "non-empty list of strings"});
  config["architectures"] = "LlamaForCausalLM";
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'architectures'"});
}

TEST(ModelConfigTest, ReadsAChatGlm3Config) {
  auto result = parse(chatglm3_config());
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const ModelConfig& c = result.value();
  EXPECT_EQ(c.architecture, Architecture::kChatGlm);
  EXPECT_EQ(c.vocab_size, 65024);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 13696);
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rotary_dim, 64);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_FALSE(c.alibi);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.dtype, DType::kF16);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
  EXPECT_THAT(c.layer_sliding_window, Each(0));
}

TEST(ModelConfigTest, ReadsGlm4RopeRatioAndBiasSwitches) {
  json config = chatglm3_config();
  config["architectures"] = {"ChatGLMForConditionalGeneration"};
  config["rope_ratio"] = 500;
  config["padded_vocab_size"] = 151552;
  config["add_bias_linear"] = true;
  config["add_qkv_bias"] = false;
  config["multi_query_attention"] = false;
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_DOUBLE_EQ(result.value().rope_theta, 5e6);
  EXPECT_EQ(result.value().vocab_size, 151552);
  EXPECT_EQ(result.value().num_kv_heads, 32);  // multi_query_attention off: every head
  EXPECT_TRUE(result.value().qkv_bias);        // add_bias_linear implies it
  EXPECT_TRUE(result.value().o_bias);
  EXPECT_TRUE(result.value().mlp_bias);
}

TEST(ModelConfigTest, RejectsChatGlmVariantsNoPublishedModelUses) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, bool>>{
           {"rmsnorm", false},
           {"post_layer_norm", false},
           {"apply_residual_connection_post_layernorm", true}}) {
    json config = chatglm3_config();
    config[key] = value;
    expect_config_error(config, StatusCode::kUnimplemented, {"key '" + key + "'"});
  }
  json config = chatglm3_config();
  config.erase("num_layers");
  expect_config_error(config, StatusCode::kInvalidArgument, {"missing required key 'num_layers'"});
  config = chatglm3_config();
  config["multi_query_group_num"] = 3;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'multi_query_group_num'", "does not divide"});
  config = chatglm3_config();
  config["kv_channels"] = 6;
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'kv_channels'"});
}

TEST(ModelConfigTest, ReadsBaichuanShapesByVllmsRules) {
  auto seven = parse(baichuan2_7b_config());
  ASSERT_TRUE(seven.is_ok()) << seven.status().to_string();
  EXPECT_EQ(seven.value().architecture, Architecture::kBaichuan);
  EXPECT_EQ(seven.value().num_kv_heads, 32);
  EXPECT_FALSE(seven.value().alibi);
  EXPECT_EQ(seven.value().rotary_dim, 128);
  EXPECT_TRUE(seven.value().norm_head);  // vocab_size 125696: Baichuan2
  EXPECT_EQ(seven.value().max_position_embeddings, 4096);

  json thirteen = baichuan2_7b_config();  // Baichuan2-13B: width 5120, no max_position_embeddings
  thirteen["hidden_size"] = 5120;
  thirteen["num_attention_heads"] = 40;
  thirteen.erase("max_position_embeddings");
  thirteen["model_max_length"] = 4096;
  auto alibi = parse(thirteen);
  ASSERT_TRUE(alibi.is_ok()) << alibi.status().to_string();
  EXPECT_TRUE(alibi.value().alibi);
  EXPECT_EQ(alibi.value().rotary_dim, 0);
  EXPECT_EQ(alibi.value().max_position_embeddings, 4096);

  json v1 = thirteen;  // Baichuan-7B (v1) always has rope; its vocabulary is not Baichuan2's
  v1["architectures"] = {"BaiChuanForCausalLM"};
  v1["vocab_size"] = 64000;
  auto rope = parse(v1);
  ASSERT_TRUE(rope.is_ok()) << rope.status().to_string();
  EXPECT_FALSE(rope.value().alibi);
  EXPECT_FALSE(rope.value().norm_head);

  json tied = baichuan2_7b_config();
  tied["tie_word_embeddings"] = true;
  expect_config_error(tied, StatusCode::kUnimplemented, {"NormHead"});
}

// ---- Rope ------------------------------------------------------------------------------------

TEST(ModelConfigTest, ReadsLlama3RopeScaling) {
  json config = llama_config();
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  const RopeScaling& r = result.value().rope_scaling;
  EXPECT_EQ(r.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(r.factor, 8.0);
  EXPECT_DOUBLE_EQ(r.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(r.high_freq_factor, 4.0);
  EXPECT_EQ(r.original_max_position_embeddings, 8192);

  config["rope_scaling"].erase("low_freq_factor");
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"missing required key 'rope_scaling.low_freq_factor'"});
  config["rope_scaling"]["low_freq_factor"] = 4.0;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_scaling.high_freq_factor'", "greater than low_freq_factor"});
  config["rope_scaling"]["low_freq_factor"] = "1";
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_scaling.low_freq_factor'", "expected a number"});
}

TEST(ModelConfigTest, ReadsLinearRopeScalingUnderEitherTypeKey) {
  for (const char* key : {"type", "rope_type"}) {
    json config = llama_config();
    config["rope_scaling"] = {{key, "linear"}, {"factor", 2}};
    auto result = parse(config);
    ASSERT_TRUE(result.is_ok()) << result.status().to_string();
    EXPECT_EQ(result.value().rope_scaling.type, RopeScalingType::kLinear);
    EXPECT_DOUBLE_EQ(result.value().rope_scaling.factor, 2.0);
  }
  json config = llama_config();
  config["rope_scaling"] = {{"type", "dynamic"}, {"rope_type", "linear"}, {"factor", 3}};
  EXPECT_EQ(parse(config).value().rope_scaling.type, RopeScalingType::kLinear);

  config["rope_scaling"] = {{"type", "linear"}};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"missing required key 'rope_scaling.factor'"});
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 0}};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_scaling.factor'", "positive"});
  config["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(config).value().rope_scaling.type, RopeScalingType::kNone);
  config["rope_scaling"] = {{"factor", 2}};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"missing required key 'rope_scaling.rope_type'"});
  config["rope_scaling"] = "linear";
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_scaling'", "expected an object or null"});
}

TEST(ModelConfigTest, RejectsUnsupportedRopeTypes) {
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    json config = llama_config();
    config["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    expect_config_error(config, StatusCode::kUnimplemented,
                        {"rope_scaling type '" + std::string(type) + "' is not supported",
                         "default, linear, llama3"});
  }
}

TEST(ModelConfigTest, ReadsTransformersV5RopeParameters) {
  json config = llama_config();
  config.erase("rope_theta");
  config.erase("rope_scaling");
  config.erase("torch_dtype");
  config["dtype"] = "float16";
  config["rope_parameters"] = {
      {"rope_type", "llama3"},   {"rope_theta", 500000.0},
      {"factor", 32.0},          {"low_freq_factor", 1.0},
      {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_DOUBLE_EQ(result.value().rope_theta, 500000.0);
  EXPECT_EQ(result.value().rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(result.value().rope_scaling.factor, 32.0);
  EXPECT_EQ(result.value().dtype, DType::kF16);

  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_DOUBLE_EQ(result.value().rope_theta, 1e6);
  EXPECT_EQ(result.value().rope_scaling.type, RopeScalingType::kNone);

  config["rope_parameters"] = {{"rope_theta", 2e6}};  // no rope_type: default rope
  EXPECT_DOUBLE_EQ(parse(config).value().rope_theta, 2e6);

  config["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 4.0}};
  expect_config_error(config, StatusCode::kUnimplemented, {"rope_parameters type 'yarn'"});
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", -1}};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_parameters.rope_theta'", "positive"});
  config["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}};
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"rope_parameters.full_attention", "per-layer-type"});
  config["rope_parameters"] = 5;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'rope_parameters'", "expected an object"});
}

// ---- Other fields ----------------------------------------------------------------------------

TEST(ModelConfigTest, ReadsDTypes) {
  struct Case {
    const char* key;
    const char* value;
    DType dtype;
  };
  for (const Case& c :
       {Case{"torch_dtype", "float32", DType::kF32}, Case{"torch_dtype", "float16", DType::kF16},
        Case{"torch_dtype", "bfloat16", DType::kBF16}, Case{"dtype", "float32", DType::kF32}}) {
    json config = llama_config();
    config.erase("torch_dtype");
    config[c.key] = c.value;
    auto result = parse(config);
    ASSERT_TRUE(result.is_ok()) << result.status().to_string();
    EXPECT_EQ(result.value().dtype, c.dtype) << c.key << "=" << c.value;
  }
  json config = llama_config();
  config["torch_dtype"] = "int8";
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"key 'torch_dtype'", "'int8' is not supported"});
  config["torch_dtype"] = 16;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'torch_dtype'", "expected a string"});
}

TEST(ModelConfigTest, ReadsTokenIds) {
  json config = llama_config();
  config["eos_token_id"] = {128001, 128008, 128009};
  config["bos_token_id"] = nullptr;
  auto result = parse(config);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_THAT(result.value().eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(result.value().bos_token_id, -1);

  config["eos_token_id"] = {1, "2"};
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'eos_token_id'", "expected a token id"});
  config["eos_token_id"] = -1;
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'eos_token_id'"});
  config["eos_token_id"] = 2;
  config["bos_token_id"] = "1";
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'bos_token_id'", "expected an integer"});
}

TEST(ModelConfigTest, RejectsUnsupportedFeatures) {
  json config = llama_config();
  config["hidden_act"] = "gelu";
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"key 'hidden_act'", "'gelu' is not supported (expected 'silu')"});

  config = llama_config();
  config["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}};
  expect_config_error(config, StatusCode::kUnimplemented,
                      {"key 'quantization_config.quant_method'", "'bitsandbytes'", "awq, gptq"});
  config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 8}};
  expect_config_error(config, StatusCode::kUnimplemented, {"8-bit"});
  config["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"version", "gemv"}};
  expect_config_error(config, StatusCode::kUnimplemented, {"GEMM layout"});
  config["quantization_config"] = {
      {"quant_method", "gptq"}, {"bits", 4}, {"checkpoint_format", "marlin"}};
  expect_config_error(config, StatusCode::kUnimplemented, {"'marlin'"});
  config["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 48}};
  expect_config_error(config, StatusCode::kUnimplemented, {"group_size", "48"});
}

TEST(ModelConfigTest, ReadsAwqAndGptqQuantization) {
  json config = llama_config();
  config["quantization_config"] = {{"quant_method", "awq"},
                                   {"bits", 4},
                                   {"group_size", 128},
                                   {"zero_point", true},
                                   {"version", "GEMM"}};
  auto awq = parse(config);
  ASSERT_TRUE(awq.is_ok()) << awq.status().to_string();
  EXPECT_EQ(awq.value().quant.method, QuantMethod::kAwq);
  EXPECT_EQ(awq.value().quant.group_size, 128);
  EXPECT_EQ(awq.value().quant.zero_offset, 0);

  config["quantization_config"] = {
      {"quant_method", "gptq"}, {"bits", 4}, {"group_size", -1}, {"desc_act", true}, {"sym", true}};
  auto gptq = parse(config);
  ASSERT_TRUE(gptq.is_ok()) << gptq.status().to_string();
  EXPECT_EQ(gptq.value().quant.method, QuantMethod::kGptq);
  EXPECT_EQ(gptq.value().quant.group_size, 0);  // whole rows
  EXPECT_TRUE(gptq.value().quant.desc_act);
  EXPECT_EQ(gptq.value().quant.zero_offset, 1);  // checkpoint_format gptq (v1): zero - 1
}

// ---- Errors ------------------------------------------------------------------------------------

TEST(ModelConfigTest, RejectsMissingRequiredKeys) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    json config = llama_config();
    config.erase(key);
    expect_config_error(config, StatusCode::kInvalidArgument,
                        {"missing required key '" + std::string(key) + "'"});
    config[key] = nullptr;
    expect_config_error(config, StatusCode::kInvalidArgument,
                        {"missing required key '" + std::string(key) + "'"});
  }
}

TEST(ModelConfigTest, RejectsMistypedAndOutOfRangeValues) {
  struct Case {
    const char* key;
    json value;
    const char* fragment;
  };
  const Case cases[] = {
      {"hidden_size", "4096", "expected an integer, got \"4096\""},
      {"hidden_size", 4096.5, "expected an integer, got 4096.5"},
      {"hidden_size", 0, "expected an integer in [1, 1048576], got 0"},
      {"vocab_size", -5, "got -5"},
      {"num_hidden_layers", 4294967296LL, "got 4294967296"},
      {"intermediate_size", true, "expected an integer"},
      {"num_key_value_heads", 0, "got 0"},
      {"max_position_embeddings", "8k", "expected an integer"},
      {"rms_norm_eps", "1e-5", "expected a number"},
      {"rms_norm_eps", 0, "expected a positive number"},
      {"rope_theta", -10000, "expected a positive number"},
      {"tie_word_embeddings", "false", "expected true or false"},
      {"attention_bias", 1, "expected true or false"},
      {"hidden_act", 1, "expected a string"},
      {"head_dim", 0, "got 0"},
      // Bounds that keep every size product far inside 64 bits.
      {"num_hidden_layers", 100000000, "expected an integer in [1, 4096]"},
      {"vocab_size", 2147483647, "expected an integer in [1, 16777216]"},
      {"head_dim", 1 << 30, "expected an integer in [1, 4096]"},
      {"num_attention_heads", 1 << 21, "expected an integer in [1, 16384]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.key) + "=" + c.value.dump());
    json config = llama_config();
    config[c.key] = c.value;
    expect_config_error(config, StatusCode::kInvalidArgument,
                        {"key '" + std::string(c.key) + "'", c.fragment});
  }
}

TEST(ModelConfigTest, RejectsInconsistentShapes) {
  json config = llama_config();
  config["num_key_value_heads"] = 5;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'num_key_value_heads'", "5 does not divide num_attention_heads 32"});

  config = llama_config();
  config["head_dim"] = 127;
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'head_dim'", "127 is odd"});

  config = llama_config();
  config["hidden_size"] = 4000;
  config["num_attention_heads"] = 24;
  config["num_key_value_heads"] = 8;
  expect_config_error(config, StatusCode::kInvalidArgument,
                      {"key 'hidden_size'", "not a multiple of num_attention_heads 24"});

  config = llama_config();
  config["hidden_size"] = 96;
  config["num_attention_heads"] = 32;
  config["num_key_value_heads"] = 32;  // head_dim 3: odd
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'head_dim'", "3 is odd"});

  config = qwen3_config();
  config["use_sliding_window"] = true;
  config["sliding_window"] = -1;
  expect_config_error(config, StatusCode::kInvalidArgument, {"key 'sliding_window'"});
}

TEST(ModelConfigTest, RejectsMalformedJsonWithItsPosition) {
  auto result = parse_model_config("{\n  \"vocab_size\": 10,\n  \"hidden_size\": }\n", kFile);
  ASSERT_FALSE(result.is_ok());
  expect_error(result.status(), StatusCode::kDataLoss, {"malformed JSON", "line 3, column 18"});

  auto empty = parse_model_config("", kFile);
  ASSERT_FALSE(empty.is_ok());
  expect_error(empty.status(), StatusCode::kDataLoss, {"malformed JSON"});

  auto array = parse_model_config("[1, 2]", kFile);
  ASSERT_FALSE(array.is_ok());
  expect_error(array.status(), StatusCode::kDataLoss, {"expected a JSON object"});
}

// ---- generation_config.json ------------------------------------------------------------------

TEST(GenerationConfigTest, OverridesTokenIdsAndReadsSamplingDefaults) {
  ModelConfig config = parse(llama_config()).value();
  GenerationDefaults defaults;
  const json gen = {{"bos_token_id", 1},     {"eos_token_id", {128001, 128009}},
                    {"do_sample", true},     {"temperature", 0.6},
                    {"top_p", 0.9},          {"top_k", 20},
                    {"min_p", 0.05},         {"repetition_penalty", 1.1},
                    {"max_new_tokens", 512}, {"transformers_version", "4.45.0"}};
  Status status = parse_generation_config(gen.dump(), "generation_config.json", &config, &defaults);
  ASSERT_TRUE(status.is_ok()) << status.to_string();
  EXPECT_EQ(config.bos_token_id, 1);
  EXPECT_THAT(config.eos_token_ids, ElementsAre(128001, 128009));
  EXPECT_DOUBLE_EQ(defaults.temperature.value(), 0.6);
  EXPECT_DOUBLE_EQ(defaults.top_p.value(), 0.9);
  EXPECT_EQ(defaults.top_k.value(), 20);
  EXPECT_DOUBLE_EQ(defaults.min_p.value(), 0.05);
  EXPECT_DOUBLE_EQ(defaults.repetition_penalty.value(), 1.1);
  EXPECT_EQ(defaults.max_new_tokens.value(), 512);
}

TEST(GenerationConfigTest, AbsentFieldsStayEmpty) {
  ModelConfig config = parse(llama_config()).value();
  GenerationDefaults defaults;
  ASSERT_TRUE(
      parse_generation_config(R"({"temperature": null})", "gen.json", &config, &defaults).is_ok());
  EXPECT_EQ(config.bos_token_id, 128000);
  EXPECT_THAT(config.eos_token_ids, ElementsAre(128001));
  EXPECT_FALSE(defaults.temperature.has_value());
  EXPECT_FALSE(defaults.top_p.has_value());
  EXPECT_FALSE(defaults.top_k.has_value());
  EXPECT_FALSE(defaults.max_new_tokens.has_value());
  // Without a GenerationDefaults, token ids are still merged.
  ASSERT_TRUE(
      parse_generation_config(R"({"eos_token_id": 7})", "gen.json", &config, nullptr).is_ok());
  EXPECT_THAT(config.eos_token_ids, ElementsAre(7));
}

TEST(GenerationConfigTest, RejectsBadValuesAndLeavesTheConfigUnchanged) {
  struct Case {
    std::string text;
    StatusCode code;
    std::string fragment;
  };
  const Case cases[] = {
      {R"({"eos_token_id": 5, "top_p": 1.5})", StatusCode::kInvalidArgument,
       "key 'top_p': expected a number in (0"},
      {R"({"eos_token_id": 5, "top_p": 0})", StatusCode::kInvalidArgument, "key 'top_p'"},
      {R"({"temperature": -0.1})", StatusCode::kInvalidArgument, "key 'temperature'"},
      {R"({"temperature": "hot"})", StatusCode::kInvalidArgument,
       "key 'temperature': expected a number"},
      {R"({"top_k": 1.5})", StatusCode::kInvalidArgument, "key 'top_k': expected an integer"},
      {R"({"top_k": -2})", StatusCode::kInvalidArgument, "key 'top_k'"},
      {R"({"min_p": 2})", StatusCode::kInvalidArgument, "key 'min_p'"},
      {R"({"repetition_penalty": 0})", StatusCode::kInvalidArgument, "key 'repetition_penalty'"},
      {R"({"max_new_tokens": 0})", StatusCode::kInvalidArgument, "key 'max_new_tokens'"},
      {R"({"eos_token_id": "</s>"})", StatusCode::kInvalidArgument, "key 'eos_token_id'"},
      {R"({"eos_token_id": 5,)", StatusCode::kDataLoss, "malformed JSON"},
      {R"("text")", StatusCode::kDataLoss, "expected a JSON object"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ModelConfig config = parse(llama_config()).value();
    GenerationDefaults defaults;
    Status status = parse_generation_config(c.text, "generation_config.json", &config, &defaults);
    ASSERT_FALSE(status.is_ok());
    expect_error(status, c.code, {c.fragment}, "generation_config.json");
    EXPECT_THAT(config.eos_token_ids, ElementsAre(128001));
    EXPECT_FALSE(defaults.temperature.has_value());
  }
}

// ---- load_model_config -------------------------------------------------------------------------

class LoadModelConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "model_config_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

TEST_F(LoadModelConfigTest, ReadsConfigAndGenerationConfig) {
  write("config.json", qwen3_config().dump(2));
  write("generation_config.json", R"({"eos_token_id": [151645, 151643], "temperature": 0.7})");
  GenerationDefaults defaults;
  auto result = load_model_config(dir_, &defaults);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_EQ(result.value().architecture, Architecture::kQwen3);
  EXPECT_THAT(result.value().eos_token_ids, ElementsAre(151645, 151643));
  EXPECT_DOUBLE_EQ(defaults.temperature.value(), 0.7);

  auto without_defaults = load_model_config(dir_);
  ASSERT_TRUE(without_defaults.is_ok());
  EXPECT_THAT(without_defaults.value().eos_token_ids, ElementsAre(151645, 151643));
}

TEST_F(LoadModelConfigTest, GenerationConfigIsOptional) {
  write("config.json", llama_config().dump());
  auto result = load_model_config(dir_);
  ASSERT_TRUE(result.is_ok()) << result.status().to_string();
  EXPECT_THAT(result.value().eos_token_ids, ElementsAre(128001));
}

TEST_F(LoadModelConfigTest, ErrorsNameTheFile) {
  const std::string config_path = (dir_ / "config.json").string();
  auto missing = load_model_config(dir_);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), config_path + ": not found");

  auto no_dir = load_model_config(dir_ / "absent");
  ASSERT_FALSE(no_dir.is_ok());
  EXPECT_EQ(no_dir.status().message(), (dir_ / "absent" / "config.json").string() + ": not found");

  write("config.json", R"({"architectures": ["LlamaForCausalLM"]})");
  auto incomplete = load_model_config(dir_);
  ASSERT_FALSE(incomplete.is_ok());
  expect_error(incomplete.status(), StatusCode::kInvalidArgument,
               {"missing required key 'vocab_size'"}, config_path);

  write("config.json", llama_config().dump());
  write("generation_config.json", R"({"top_k": "many"})");
  auto bad_gen = load_model_config(dir_);
  ASSERT_FALSE(bad_gen.is_ok());
  expect_error(bad_gen.status(), StatusCode::kInvalidArgument, {"key 'top_k'"},
               (dir_ / "generation_config.json").string());
}

TEST_F(LoadModelConfigTest, BaichuanShapeComesFromItsModelingFile) {
  json config = baichuan2_7b_config();
  config["vocab_size"] = 320;  // not Baichuan2's size: only the code tells NormHead
  write("config.json", config.dump());
  write("modeling_baichuan.py", "def _get_interleave(n): ...\nclass NormHead(nn.Module): ...\n");
  auto alibi = load_model_config(dir_);
  ASSERT_TRUE(alibi.is_ok()) << alibi.status().to_string();
  EXPECT_TRUE(alibi.value().alibi);  // despite hidden_size 4096
  EXPECT_EQ(alibi.value().rotary_dim, 0);
  EXPECT_TRUE(alibi.value().norm_head);

  write("modeling_baichuan.py", "class RotaryEmbedding(torch.nn.Module): ...\n");
  auto rope = load_model_config(dir_);
  ASSERT_TRUE(rope.is_ok()) << rope.status().to_string();
  EXPECT_FALSE(rope.value().alibi);
  EXPECT_FALSE(rope.value().norm_head);

  write("modeling_baichuan.py", "# neither\n");
  auto unknown = load_model_config(dir_);
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnimplemented);
  EXPECT_THAT(unknown.status().message(), HasSubstr("modeling_baichuan.py"));
}

}  // namespace
}  // namespace tierserve

// libFuzzer target for the OpenAI request parsers (server/openai_request.h): whatever the body,
// parsing must not crash or throw, every error is a 400 or 404 with a message and a type whose
// error JSON parses back, and anything accepted satisfies the documented ranges and turns into
// SamplingParams that pass SamplingParams::validate() (or a 400).
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "server/openai_request.h"
#include "server/openai_response.h"

namespace {

using tierserve::ApiError;

void check_error(const ApiError& e) {
  if (e.http_status != 400 && e.http_status != 404) std::abort();
  if (e.message.empty() || e.type.empty()) std::abort();
  nlohmann::json j = nlohmann::json::parse(tierserve::error_json(e), nullptr, false);
  if (j.is_discarded() || j["error"]["code"] != e.http_status) std::abort();
}

void check_options(const tierserve::GenerationOptions& o, std::string_view prompt_param) {
  const tierserve::SamplingParams& p = o.params;
  if (!(p.temperature >= 0) || !(p.top_p > 0 && p.top_p <= 1) || p.top_k < -1) std::abort();
  if (!(p.min_p >= 0 && p.min_p <= 1) || !(p.repetition_penalty > 0)) std::abort();
  if (p.n < 1 || p.n > 128 || p.min_tokens < 0) std::abort();
  if (o.max_tokens && *o.max_tokens < 1) std::abort();
  if (p.logprobs && (*p.logprobs < 0 || *p.logprobs > 20)) std::abort();
  for (const std::string& s : o.stop) {
    if (s.empty()) std::abort();
  }
  if (o.include_usage && !o.stream) std::abort();
  // Resolution for a few prompt lengths either succeeds with a valid request or is a 400.
  for (int32_t prompt : {0, 1, 50, 99, 100}) {
    auto params = tierserve::sampling_params_for_prompt(o, prompt, 100, prompt_param);
    if (!params.is_ok()) {
      if (params.error().http_status != 400) std::abort();
      continue;
    }
    if (!params.value().validate().is_ok()) std::abort();
    if (params.value().max_tokens > 100 - prompt) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  tierserve::RequestDefaults defaults;
  defaults.served_model_names = {"tiny"};
  defaults.max_model_len = 100;
  defaults.generation.temperature = 0.7;
  defaults.generation.max_new_tokens = 40;

  auto completion = tierserve::parse_completion_request(body, defaults);
  if (completion.is_ok()) {
    if (completion.value().prompts.empty()) std::abort();
    for (const tierserve::PromptInput& p : completion.value().prompts) {
      if (p.is_tokens ? p.token_ids.empty() : p.text.empty()) std::abort();
      for (int32_t id : p.token_ids) {
        if (id < 0) std::abort();
      }
    }
    check_options(completion.value().options, "prompt");
  } else {
    check_error(completion.error());
  }

  auto chat = tierserve::parse_chat_request(body, defaults);
  if (chat.is_ok()) {
    nlohmann::json messages = nlohmann::json::parse(chat.value().messages_json, nullptr, false);
    if (!messages.is_array() || messages.empty()) std::abort();
    for (const nlohmann::json& m : messages) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) std::abort();
      if (m.contains("content") && !m["content"].is_string() && !m["content"].is_null()) {
        std::abort();
      }
    }
    const tierserve::ChatPromptOptions& t = chat.value().template_options;
    if (t.add_generation_prompt && t.continue_final_message) std::abort();
    check_options(chat.value().options, "messages");
  } else {
    check_error(chat.error());
  }

  auto tokenize = tierserve::parse_tokenize_request(body, defaults);
  if (!tokenize.is_ok()) check_error(tokenize.error());
  auto detokenize = tierserve::parse_detokenize_request(body, defaults);
  if (detokenize.is_ok()) {
    for (int32_t id : detokenize.value().tokens) {
      if (id < 0) std::abort();
    }
  } else {
    check_error(detokenize.error());
  }
  return 0;
}

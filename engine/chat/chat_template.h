// Chat templates: renders a model's Hugging Face chat template (a Jinja2 subset) exactly as
// transformers' apply_chat_template does, and finds which template a model directory uses.
//
// Thread-safety: a parsed ChatTemplate is immutable; render() may run concurrently.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/status.h"
#include "engine/chat/interpreter.h"

namespace tierserve::chat {

struct RenderOptions {
  // Local time for strftime_now(); defaults to the system clock's local time. Tests pin it.
  std::function<std::tm()> now;
  RenderLimits limits;
};

class ChatTemplate {
 public:
  // Parses `source`. `name` labels errors (e.g. "chat_template.jinja"). A syntax error returns
  // invalid_argument: "chat template '<name>' line <n>: <what>".
  static Result<ChatTemplate> parse(std::string source, std::string name);

  // Renders with `context` as the template's variables: typically messages,
  // add_generation_prompt, bos_token, eos_token, tools, plus chat_template_kwargs merged in
  // (see make_chat_context). A runtime error (raise_exception, undefined attribute, type error,
  // exceeded limit) returns invalid_argument naming the template line; raise_exception's message
  // appears verbatim.
  Result<std::string> render(const nlohmann::ordered_json& context,
                             const RenderOptions& options = {}) const;

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }

 private:
  struct Parsed;
  ChatTemplate(std::string source, std::string name, std::shared_ptr<const Parsed> parsed);
  std::string source_;
  std::string name_;
  std::shared_ptr<const Parsed> parsed_;
};

// The context transformers' apply_chat_template builds: {messages, tools, documents,
// add_generation_prompt, bos_token, eos_token, ...kwargs}, with `kwargs` (chat_template_kwargs, an
// object or null) merged last. `tools` and `documents` are null (None: defined, but none) when not
// given, exactly as transformers passes them.
nlohmann::ordered_json make_chat_context(const nlohmann::ordered_json& messages,
                                         bool add_generation_prompt, const std::string& bos_token,
                                         const std::string& eos_token,
                                         const nlohmann::ordered_json& tools = nullptr,
                                         const nlohmann::ordered_json& kwargs = nullptr);

// Where a template came from.
struct TemplateSource {
  std::string text;    // the template
  std::string origin;  // "chat_template.jinja", "tokenizer_config.json", or "builtin:<key>"
};

// Finds the chat template of a Hugging Face model directory, in order:
//   1. <dir>/chat_template.jinja;
//   2. tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"}
//      from which `template_name` (default "default") is chosen;
//   3. a built-in template chosen by `architecture` (config.json's architectures[0]):
//      builtin_template_for_architecture().
// Returns not_found when none applies, data_loss for a malformed tokenizer_config.json, and
// not_found naming the available names when `template_name` is not in the list.
Result<TemplateSource> load_chat_template(const std::string& model_dir,
                                          const std::string& architecture,
                                          const std::optional<std::string>& template_name = {});

// The built-in fallback for an architecture, or nullptr when there is none:
//   LlamaForCausalLM -> Llama 3 header format; Qwen2ForCausalLM, Qwen3ForCausalLM -> ChatML;
//   MistralForCausalLM -> Mistral [INST] format; ChatGLMModel, ChatGLMForConditionalGeneration ->
//   ChatGLM3; BaichuanForCausalLM -> Baichuan2 (<reserved_106>/<reserved_107>).
const char* builtin_template_for_architecture(const std::string& architecture);

}  // namespace tierserve::chat

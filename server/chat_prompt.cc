#include "server/chat_prompt.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "engine/chat/chat_template.h"
#include "engine/gguf_model.h"

namespace tierserve {
namespace {

// config.json's architectures[0], or "" for a directory that holds only tokenizer files.
std::string architecture_of(const std::string& model_dir) {
  auto text = read_file_if_exists(std::filesystem::path(model_dir) / "config.json");
  if (!text.is_ok() || !text.value()) return "";
  nlohmann::json config = nlohmann::json::parse(*text.value(), nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("architectures") ||
      !config["architectures"].is_array() || config["architectures"].empty() ||
      !config["architectures"][0].is_string()) {
    return "";
  }
  return config["architectures"][0].get<std::string>();
}

// The chat template of a model: a GGUF file's tokenizer.chat_template (else the built-in one of
// its architecture), or a Hugging Face directory's (chat::load_chat_template).
Result<chat::TemplateSource> find_chat_template(const std::string& model_dir) {
  const std::optional<std::filesystem::path> gguf = gguf_file_of(model_dir);
  if (!gguf) return chat::load_chat_template(model_dir, architecture_of(model_dir));
  TS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(*gguf));
  const GgufContents& c = file->contents();
  if (c.find("tokenizer.chat_template") != nullptr) {
    TS_ASSIGN_OR_RETURN(std::string text, c.get_string("tokenizer.chat_template"));
    return chat::TemplateSource{text, gguf->filename().string() + ":tokenizer.chat_template"};
  }
  TS_ASSIGN_OR_RETURN(ModelConfig config, gguf_model_config(*file));
  const char* builtin = chat::builtin_template_for_architecture(config.architecture_name);
  if (builtin == nullptr) {
    return not_found(gguf->string() + ": no tokenizer.chat_template and no built-in template");
  }
  return chat::TemplateSource{builtin, "builtin:" + config.architecture_name};
}

// The text of a message's content: a string, or the last text part of a list of parts (as
// transformers' continue_final_message reads it).
std::string final_content(const nlohmann::ordered_json& message) {
  if (!message.contains("content")) return "";
  const auto& c = message["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {
    for (auto it = c.rbegin(); it != c.rend(); ++it) {
      if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
        return (*it)["text"].get<std::string>();
      }
    }
  }
  return "";
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

Result<std::string> render_chat_prompt(const std::string& model_dir, const Tokenizer& tokenizer,
                                       const std::string& messages_json,
                                       const ChatPromptOptions& options) {
  nlohmann::ordered_json messages =
      nlohmann::ordered_json::parse(messages_json, nullptr, /*allow_exceptions=*/false);
  if (messages.is_discarded() || !messages.is_array()) {
    return invalid_argument("--messages: expected a JSON array of {\"role\", \"content\"} objects");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object() || !messages[i].contains("role")) {
      return invalid_argument("--messages: item " + std::to_string(i) +
                              " is not an object with a \"role\"");
    }
  }
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::parse(
      options.chat_template_kwargs_json, nullptr, /*allow_exceptions=*/false);
  if (kwargs.is_discarded() || !kwargs.is_object()) {
    return invalid_argument("chat_template_kwargs: expected a JSON object");
  }
  if (options.add_generation_prompt && options.continue_final_message) {
    return invalid_argument(
        "Cannot set both `continue_final_message` and `add_generation_prompt` to True.");
  }
  if (options.continue_final_message && messages.empty()) {
    return invalid_argument("continue_final_message needs at least one message");
  }
  TS_ASSIGN_OR_RETURN(chat::TemplateSource source, find_chat_template(model_dir));
  TS_ASSIGN_OR_RETURN(chat::ChatTemplate tmpl,
                      chat::ChatTemplate::parse(source.text, source.origin));
  const SpecialTokens& special = tokenizer.special_tokens();
  TS_ASSIGN_OR_RETURN(
      std::string rendered,
      tmpl.render(chat::make_chat_context(messages, options.add_generation_prompt,
                                          special.bos_token, special.eos_token, nullptr, kwargs)));
  if (!options.continue_final_message) return rendered;
  // As transformers: cut after the last occurrence of the final message's content (or of its
  // stripped form, which templates that trim content render), dropping the end-of-turn tokens.
  const std::string content = final_content(messages.back());
  const std::string stripped = strip(content);
  size_t at = content.empty() ? std::string::npos : rendered.rfind(content);
  size_t len = content.size();
  if (at == std::string::npos && !stripped.empty()) {
    at = rendered.rfind(stripped);
    len = stripped.size();
  }
  if (at == std::string::npos) {
    return invalid_argument(
        "continue_final_message is set but the final message does not appear in the chat "
        "history after applying the chat template");
  }
  return rendered.substr(0, at + len);
}

}  // namespace tierserve

#include "server/chat_prompt.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "engine/chat/chat_template.h"

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

}  // namespace

Result<std::string> render_chat_prompt(const std::string& model_dir, const Tokenizer& tokenizer,
                                       const std::string& messages_json) {
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
  TS_ASSIGN_OR_RETURN(chat::TemplateSource source,
                      chat::load_chat_template(model_dir, architecture_of(model_dir)));
  TS_ASSIGN_OR_RETURN(chat::ChatTemplate tmpl,
                      chat::ChatTemplate::parse(source.text, source.origin));
  const SpecialTokens& special = tokenizer.special_tokens();
  return tmpl.render(chat::make_chat_context(messages, /*add_generation_prompt=*/true,
                                             special.bos_token, special.eos_token));
}

}  // namespace tierserve

#include "engine/chat/chat_template.h"

#include <chrono>

#include "common/file.h"
#include "engine/chat/parser.h"

namespace tierserve::chat {

struct ChatTemplate::Parsed {
  Body body;
};

ChatTemplate::ChatTemplate(std::string source, std::string name,
                           std::shared_ptr<const Parsed> parsed)
    : source_(std::move(source)), name_(std::move(name)), parsed_(std::move(parsed)) {}

namespace {

Status template_error(const std::string& name, const TemplateError& e) {
  std::string where = "chat template '" + name + "'";
  if (e.line > 0) where += " line " + std::to_string(e.line);
  return invalid_argument(where + ": " + e.what());
}

std::tm local_now() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string source, std::string name) {
  try {
    auto parsed = std::make_shared<Parsed>();
    parsed->body = parse_template(source);
    return ChatTemplate(std::move(source), std::move(name), std::move(parsed));
  } catch (const TemplateError& e) {
    return template_error(name, e);
  }
}

Result<std::string> ChatTemplate::render(const nlohmann::ordered_json& context,
                                         const RenderOptions& options) const {
  if (!context.is_object()) return invalid_argument("chat template context must be a JSON object");
  try {
    Value ctx = Value::from_json(context);
    return render_body(parsed_->body, ctx.dict(), options.now ? options.now : local_now,
                       options.limits);
  } catch (const TemplateError& e) {
    return template_error(name_, e);
  }
}

nlohmann::ordered_json make_chat_context(const nlohmann::ordered_json& messages,
                                         bool add_generation_prompt, const std::string& bos_token,
                                         const std::string& eos_token,
                                         const nlohmann::ordered_json& tools,
                                         const nlohmann::ordered_json& kwargs) {
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["tools"] = tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token;
  ctx["eos_token"] = eos_token;
  if (kwargs.is_object()) {
    for (const auto& [k, v] : kwargs.items()) ctx[k] = v;
  }
  return ctx;
}

Result<TemplateSource> load_chat_template(const std::string& model_dir,
                                          const std::string& architecture,
                                          const std::optional<std::string>& template_name) {
  TS_ASSIGN_OR_RETURN(std::optional<std::string> jinja,
                      read_file_if_exists(model_dir + "/chat_template.jinja"));
  if (jinja) return TemplateSource{*jinja, "chat_template.jinja"};
  std::string config_path = model_dir + "/tokenizer_config.json";
  TS_ASSIGN_OR_RETURN(std::optional<std::string> text, read_file_if_exists(config_path));
  if (text) {
    nlohmann::ordered_json config;
    try {
      config = nlohmann::ordered_json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
      return data_loss(config_path + ": not valid JSON: " + e.what());
    }
    if (config.is_object() && config.contains("chat_template")) {
      const auto& ct = config["chat_template"];
      if (ct.is_string()) return TemplateSource{ct.get<std::string>(), "tokenizer_config.json"};
      if (ct.is_array()) {
        std::string wanted = template_name.value_or("default");
        std::string names;
        for (const auto& entry : ct) {
          if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
              !entry.contains("template") || !entry["template"].is_string()) {
            return data_loss(
                config_path +
                ": chat_template list entries must be {\"name\", \"template\"} strings");
          }
          std::string n = entry["name"].get<std::string>();
          if (n == wanted) {
            return TemplateSource{entry["template"].get<std::string>(),
                                  "tokenizer_config.json:" + n};
          }
          names += (names.empty() ? "" : ", ") + n;
        }
        return not_found(config_path + ": no chat template named '" + wanted + "' (have: " + names +
                         ")");
      }
      if (!ct.is_null()) {
        return data_loss(config_path + ": chat_template must be a string or a list");
      }
    }
  }
  if (const char* builtin = builtin_template_for_architecture(architecture)) {
    return TemplateSource{builtin, "builtin:" + architecture};
  }
  return not_found("no chat template in " + model_dir +
                   " (chat_template.jinja, tokenizer_config.json) and no built-in one for "
                   "architecture '" +
                   architecture + "'");
}

}  // namespace tierserve::chat

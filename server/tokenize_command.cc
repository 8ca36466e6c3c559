#include "server/tokenize_command.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"
#include "server/chat_prompt.h"

namespace tierserve {

CLI::App* add_tokenize_command(CLI::App& app, TokenizeCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("model", o.model_dir, "Model (or tokenizer-only) directory")->required();
  auto* text = cmd->add_option("--text", o.text, "Text to encode");
  auto* messages = cmd->add_option("--messages", o.messages,
                                   "JSON array of chat messages, rendered by the chat template");
  text->excludes(messages);
  cmd->add_flag("--no-special-tokens", o.no_special_tokens,
                "Do not add special tokens (BOS...) as encode does by default");
  cmd->add_flag("--json", o.json, "Print {\"tokens\": [...], \"prompt\": \"...\"}");
  return cmd;
}

int run_tokenize_command(const TokenizeCommandOptions& o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 1;
  };
  auto tokenizer = Tokenizer::load(o.model_dir);
  if (!tokenizer.is_ok()) return fail(tokenizer.status());
  if (!o.text && !o.messages) return fail(invalid_argument("give --text or --messages"));
  std::string prompt;
  bool add_special = !o.no_special_tokens;
  if (o.messages) {
    auto rendered = render_chat_prompt(o.model_dir, *tokenizer.value(), *o.messages);
    if (!rendered.is_ok()) return fail(rendered.status());
    prompt = std::move(rendered).value();
    add_special = false;  // the template already wrote BOS and friends
  } else {
    prompt = *o.text;
  }
  auto ids = tokenizer.value()->encode(prompt, add_special);
  if (!ids.is_ok()) return fail(ids.status());
  if (o.json) {
    nlohmann::ordered_json j;
    j["tokens"] = ids.value();
    j["prompt"] = prompt;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids.value().size(); ++i) {
      line += (i ? "," : "") + std::to_string(ids.value()[i]);
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

}  // namespace tierserve

#include "server/tokenize_command.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.h"

namespace tierserve {

CLI::App* add_tokenize_command(CLI::App& app, TokenizeCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("model", o.model_dir, "Model (or tokenizer-only) directory")->required();
  cmd->add_option("--text", o.text, "Text to encode")->required();
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
  const std::string& prompt = *o.text;
  auto ids = tokenizer.value()->encode(prompt, !o.no_special_tokens);
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

// `tierserve tokenize`: the token ids of a text (or of a chat rendered by the model's template),
// exactly as Hugging Face's tokenizer would produce them. Needs only the tokenizer files.
#pragma once

#include <optional>
#include <string>

#include "CLI/CLI.hpp"

namespace tierserve {

struct TokenizeCommandOptions {
  std::string model_dir;                // directory holding tokenizer.json or tokenizer.model
  std::optional<std::string> text;      // --text: encoded as tokenizer.encode(text) does
  std::optional<std::string> messages;  // --messages: a JSON chat, rendered by the template
  bool no_special_tokens = false;       // --no-special-tokens: add_special_tokens=False
  bool json = false;                    // print {"tokens": [...], "prompt": "..."}
};

// Registers the subcommand on `app`.
CLI::App* add_tokenize_command(CLI::App& app, TokenizeCommandOptions& options);

// Runs the command; returns the exit code (1 with a one-line error on stderr on failure).
int run_tokenize_command(const TokenizeCommandOptions& options);

}  // namespace tierserve

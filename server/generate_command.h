// `tierserve generate`: one prompt in (text through the model's tokenizer, or token ids), the
// generated text streamed to stdout as it is produced (or ids, for a model without a tokenizer),
// or one JSON object.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/llm_engine.h"

namespace tierserve {

struct GenerateCommandOptions {
  std::string model_dir;                // Hugging Face model directory
  std::string prompt_ids;               // --prompt-ids "1,2,3"
  std::optional<std::string> prompt;    // --prompt TEXT, encoded with special tokens as HF does
  std::optional<std::string> messages;  // --messages JSON: rendered by the chat template
  std::vector<std::string> stop;        // --stop strings: generation ends before them
  bool keep_special_tokens = false;     // --no-skip-special-tokens: special tokens appear in text
  EngineOptions engine;                 // backend, load format, block size, context length
  SamplingParams sampling;              // sampling and stopping
  std::string load_format = "auto";     // "auto" or "dummy"
  std::optional<int64_t> seed;          // --seed, non-negative
  bool json = false;                    // print one JSON object instead of a line of ids
  // The sampling options, to tell which the user gave (the rest come from generation_config).
  CLI::Option* temperature_opt = nullptr;
  CLI::Option* top_p_opt = nullptr;
  CLI::Option* top_k_opt = nullptr;
  CLI::Option* min_p_opt = nullptr;
  CLI::Option* repetition_penalty_opt = nullptr;
  CLI::Option* max_tokens_opt = nullptr;

  Status validate() const;
};

// Registers the subcommand on `app`; `run` is set to the command's entry point.
CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& options);

// Runs the command; returns the process exit code (0 on success, 1 with a one-line error on
// stderr otherwise).
int run_generate_command(GenerateCommandOptions& options);

// Parses "1, 2,3" into ids; errors name the offending item.
Result<std::vector<int32_t>> parse_token_ids(const std::string& text);

}  // namespace tierserve

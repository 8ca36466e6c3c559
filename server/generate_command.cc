#include "server/generate_command.h"

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>

#include "engine/detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/chat_prompt.h"
#include "server/engine_flags.h"

namespace tierserve {

Result<std::vector<int32_t>> parse_token_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    item = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    int32_t id = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || id < 0) {
      return invalid_argument("--prompt-ids: item " + std::to_string(ids.size() + 1) + " ('" +
                              item + "') is not a non-negative integer token id");
    }
    ids.push_back(id);
    pos = comma + 1;
  }
  return ids;
}

Status GenerateCommandOptions::validate() const {
  if (model_dir.empty()) return invalid_argument("a model directory is required");
  if (!prompt && !messages && prompt_ids.empty()) {
    return invalid_argument("give --prompt, --messages or --prompt-ids");
  }
  for (const std::string& s : stop) {
    if (s.empty()) return invalid_argument("--stop strings must not be empty");
  }
  LoadFormat format;
  if (!parse_load_format(load_format, &format)) {
    return invalid_argument("--load-format must be auto or dummy, got '" + load_format + "'");
  }
  TS_RETURN_IF_ERROR(engine.validate());
  return sampling.validate();
}

CLI::App* add_generate_command(CLI::App& app, GenerateCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand("generate", "Generate tokens for one prompt of token ids");
  cmd->add_option("model", o.model_dir, "Hugging Face model directory")->required();
  auto* ids = cmd->add_option("--prompt-ids", o.prompt_ids, "Prompt token ids, comma-separated");
  auto* text = cmd->add_option("--prompt", o.prompt, "Prompt text (encoded by the tokenizer)");
  auto* messages = cmd->add_option("--messages", o.messages,
                                   "JSON array of chat messages (chat template applied)");
  ids->excludes(text);
  ids->excludes(messages);
  text->excludes(messages);
  cmd->add_option("--stop", o.stop, "Stop string (repeatable); it is not part of the output");
  cmd->add_flag("--no-skip-special-tokens", o.keep_special_tokens,
                "Keep special tokens in the output text");
  o.max_tokens_opt =
      cmd->add_option("--max-tokens", o.sampling.max_tokens, "Tokens to generate at most")
          ->capture_default_str();
  cmd->add_option("--min-tokens", o.sampling.min_tokens, "Tokens before EOS may end generation");
  o.temperature_opt =
      cmd->add_option("--temperature", o.sampling.temperature, "Sampling temperature; 0 = greedy")
          ->capture_default_str();
  o.top_k_opt =
      cmd->add_option("--top-k", o.sampling.top_k, "Keep the k most likely tokens; 0 = all");
  o.top_p_opt = cmd->add_option("--top-p", o.sampling.top_p, "Nucleus sampling mass");
  o.min_p_opt =
      cmd->add_option("--min-p", o.sampling.min_p, "Minimum probability relative to the top token");
  o.repetition_penalty_opt =
      cmd->add_option("--repetition-penalty", o.sampling.repetition_penalty,
                      "Penalty for tokens already in prompt or output (> 1 discourages)");
  cmd->add_option("--presence-penalty", o.sampling.presence_penalty,
                  "Penalty for tokens present in the output");
  cmd->add_option("--frequency-penalty", o.sampling.frequency_penalty,
                  "Penalty per occurrence in the output");
  cmd->add_option("--stop-token-ids", o.sampling.stop_token_ids, "Extra token ids that stop")
      ->delimiter(',');
  cmd->add_option("--seed", o.seed, "Sampling seed (a non-negative integer)");
  cmd->add_flag("--ignore-eos", o.sampling.ignore_eos, "Do not stop at the model's EOS tokens");
  cmd->add_option("--load-format", o.load_format, "auto (safetensors) or dummy (random weights)")
      ->capture_default_str();
  add_engine_flags(cmd, o.engine);
  cmd->add_flag("--json", o.json, "Print one JSON object");
  return cmd;
}

int run_generate_command(GenerateCommandOptions& o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 1;
  };
  if (o.seed && *o.seed < 0) {
    return fail(
        invalid_argument("--seed must be a non-negative integer, got " + std::to_string(*o.seed)));
  }
  if (o.seed) {
    o.sampling.seed = static_cast<uint64_t>(*o.seed);
    o.engine.seed = static_cast<uint64_t>(*o.seed);
  }
  parse_load_format(o.load_format, &o.engine.load_format);
  if (Status s = o.validate(); !s.is_ok()) return fail(s);
  // The tokenizer is needed for a text prompt and stop strings, and used for the output text
  // whenever the directory has one.
  const std::filesystem::path dir(o.model_dir);
  std::unique_ptr<Tokenizer> tokenizer;
  if (o.prompt || o.messages || !o.stop.empty() ||
      std::filesystem::exists(dir / "tokenizer.json") ||
      std::filesystem::exists(dir / "tokenizer.model")) {
    auto loaded = Tokenizer::load(dir);
    if (!loaded.is_ok()) return fail(loaded.status());
    tokenizer = std::move(loaded).value();
  }
  Result<std::vector<int32_t>> prompt = std::vector<int32_t>{};
  if (o.messages) {
    // As transformers: render, then encode without adding special tokens a second time.
    auto rendered = render_chat_prompt(o.model_dir, *tokenizer, *o.messages);
    if (!rendered.is_ok()) return fail(rendered.status());
    prompt = tokenizer->encode(rendered.value(), /*add_special_tokens=*/false);
  } else if (o.prompt) {
    prompt = tokenizer->encode(*o.prompt, /*add_special_tokens=*/true);
  } else {
    prompt = parse_token_ids(o.prompt_ids);
  }
  if (!prompt.is_ok()) return fail(prompt.status());
  if (tokenizer != nullptr) o.engine.tokenizer_vocab_size = tokenizer->vocab_size();
  auto engine = LlmEngine::create(o.model_dir, o.engine);
  if (!engine.is_ok()) return fail(engine.status());
  SamplingFieldsGiven given;
  given.temperature = o.temperature_opt->count() > 0;
  given.top_p = o.top_p_opt->count() > 0;
  given.top_k = o.top_k_opt->count() > 0;
  given.min_p = o.min_p_opt->count() > 0;
  given.repetition_penalty = o.repetition_penalty_opt->count() > 0;
  given.max_tokens = o.max_tokens_opt->count() > 0;
  apply_generation_defaults(engine.value()->generation_defaults(), given, &o.sampling);
  if (o.json) o.sampling.logprobs = 0;  // the JSON output reports each token's logprob
  if (Status s = o.sampling.validate(); !s.is_ok()) {
    return fail(s.with_context("generation_config.json"));
  }
  // Text streams out through the detokenizer as soon as it is final; a stop string ends
  // generation and never reaches the output.
  std::unique_ptr<StreamingDetokenizer> detok;
  std::string text;
  if (tokenizer != nullptr) {
    const bool skip_special = !o.keep_special_tokens;
    DecodeFn decode = [&tokenizer, skip_special](const std::vector<int32_t>& ids, size_t b,
                                                 size_t e) {
      auto s = tokenizer->decode(std::span<const int32_t>(ids.data() + b, e - b), skip_special);
      return s.is_ok() ? s.value() : std::string();
    };
    detok = std::make_unique<StreamingDetokenizer>(decode, prompt.value(), o.stop);
  }
  auto emit = [&](const std::string& piece) {
    text += piece;
    if (!o.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  LlmEngine::TokenCallback on_token;
  if (detok != nullptr) {
    on_token = [&](int32_t token) {
      emit(detok->add(token));
      return !detok->stopped();
    };
  }
  auto result = engine.value()->generate(prompt.value(), o.sampling, on_token);
  if (!result.is_ok()) return fail(result.status());
  const GenerateResult& r = result.value();
  if (detok != nullptr) emit(detok->finish());
  if (o.json) {
    nlohmann::ordered_json j;  // keys in the documented order
    j["prompt_token_ids"] = r.prompt_token_ids;
    j["token_ids"] = r.token_ids;
    j["logprobs"] = r.logprobs;
    j["finish_reason"] = r.finish_reason;
    if (detok != nullptr) j["text"] = text;
    std::printf("%s\n", j.dump().c_str());
  } else if (detok != nullptr) {
    std::printf("\n");
    std::fprintf(stderr, "finish_reason: %s\n", r.finish_reason.c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < r.token_ids.size(); ++i) {
      line += (i ? "," : "") + std::to_string(r.token_ids[i]);
    }
    std::printf("%s\nfinish_reason: %s\n", line.c_str(), r.finish_reason.c_str());
  }
  return 0;
}

}  // namespace tierserve

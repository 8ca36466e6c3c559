#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "engine/gguf.h"
#include "engine/tokenizer/gguf_tokenizer.h"
#include "engine/tokenizer/hf_tokenizer.h"
#include "engine/tokenizer/sp_tokenizer.h"
#include "engine/tokenizer/tiktoken_file.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

// The parsed JSON file `dir/name`, null when absent; errors name the file.
Result<nlohmann::json> read_json_if_exists(const fs::path& dir, const char* name) {
  const fs::path path = dir / name;
  TS_ASSIGN_OR_RETURN(std::optional<std::string> text, read_file_if_exists(path));
  if (!text) return nlohmann::json();
  try {
    return nlohmann::json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    return data_loss(path.string() + ": not valid JSON: " + e.what());
  }
}

// A token given as "text" or as an AddedToken dict {"content": "text", ...}; "" otherwise.
std::string token_text(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

// Appends the ids of `config[key]` (an int or a list of ints) to `ids`, skipping duplicates.
Status append_ids(const nlohmann::json& config, const char* key, const fs::path& file,
                  std::vector<int32_t>* ids) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return Status::ok();
  const auto& v = config[key];
  std::vector<int32_t> found;
  if (v.is_number_integer()) {
    found.push_back(v.get<int32_t>());
  } else if (v.is_array()) {
    for (const auto& x : v) {
      if (!x.is_number_integer()) return data_loss(file.string() + ": " + key + " is not ints");
      found.push_back(x.get<int32_t>());
    }
  } else {
    return data_loss(file.string() + ": " + key + " is neither an int nor a list of ints");
  }
  for (int32_t id : found) {
    if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
  }
  return Status::ok();
}

// ChatGLM2/3's special tokens, appended after the SentencePiece pieces in this order
// (tokenization_chatglm.py's SPTokenizer).
const std::vector<std::string> kChatGlmSpecials = {"[MASK]",   "[gMASK]",       "[sMASK]",
                                                   "sop",      "eop",           "<|system|>",
                                                   "<|user|>", "<|assistant|>", "<|observation|>"};

// tokenizer_config.json's added_tokens_decoder ({"151329": {"content": ..., "special": ...}})
// as tokenizer.json's added_tokens array.
Result<nlohmann::json> added_tokens_of(const nlohmann::json& tok_config, const fs::path& file) {
  nlohmann::json out = nlohmann::json::array();
  if (!tok_config.is_object() || !tok_config.contains("added_tokens_decoder")) return out;
  const nlohmann::json& decoder = tok_config["added_tokens_decoder"];
  if (!decoder.is_object())
    return data_loss(file.string() + ": added_tokens_decoder is not an object");
  for (const auto& [key, token] : decoder.items()) {
    int32_t id = -1;
    const auto [ptr, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || ptr != key.data() + key.size() || id < 0 || !token.is_object() ||
        !token.contains("content") || !token["content"].is_string()) {
      return data_loss(file.string() + ": added_tokens_decoder entry '" + key +
                       "' needs an id and a content string");
    }
    out.push_back({{"id", id},
                   {"content", token["content"]},
                   {"single_word", token.value("single_word", false)},
                   {"lstrip", token.value("lstrip", false)},
                   {"rstrip", token.value("rstrip", false)},
                   {"normalized", token.value("normalized", false)},
                   {"special", token.value("special", true)}});
  }
  return out;
}

// The tokenizer of tokenizer.model: GLM-4's tiktoken file, or SentencePiece (with ChatGLM2/3's
// appended specials for ChatGLMTokenizer).
Result<std::unique_ptr<tokenizer::TokenizerBackend>> load_tokenizer_model(
    const fs::path& model_dir, const nlohmann::json& tok_config,
    const std::string& tokenizer_class) {
  const fs::path path = model_dir / "tokenizer.model";
  TS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  if (tokenizer::looks_like_tiktoken(std::string_view(text).substr(0, 4096))) {
    TS_ASSIGN_OR_RETURN(nlohmann::json added,
                        added_tokens_of(tok_config, model_dir / "tokenizer_config.json"));
    TS_ASSIGN_OR_RETURN(std::string json,
                        tokenizer::tiktoken_to_tokenizer_json(text, path.string(),
                                                              tokenizer::kGlm4SplitPattern, added));
    TS_ASSIGN_OR_RETURN(auto hf, tokenizer::HfTokenizer::parse(json, path.string()));
    return std::unique_ptr<tokenizer::TokenizerBackend>(std::move(hf));
  }
  TS_ASSIGN_OR_RETURN(auto sp, tokenizer::SpTokenizer::load(path));
  if (tokenizer_class == "ChatGLMTokenizer") {
    TS_RETURN_IF_ERROR(sp->append_tokens(kChatGlmSpecials, /*special=*/true));
  }
  return std::unique_ptr<tokenizer::TokenizerBackend>(std::move(sp));
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<tokenizer::TokenizerBackend> backend, SpecialTokens special)
    : backend_(std::move(backend)), special_(std::move(special)) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::load(const fs::path& model_dir) {
  if (const std::optional<fs::path> gguf = gguf_file_of(model_dir)) {
    return load_gguf(*gguf);
  }
  TS_ASSIGN_OR_RETURN(nlohmann::json tok_config,
                      read_json_if_exists(model_dir, "tokenizer_config.json"));
  const std::string tokenizer_class =
      tok_config.is_object() ? tok_config.value("tokenizer_class", "") : "";
  std::unique_ptr<tokenizer::TokenizerBackend> backend;
  const bool from_json = fs::exists(model_dir / "tokenizer.json");
  if (from_json) {
    TS_ASSIGN_OR_RETURN(backend, tokenizer::HfTokenizer::load(model_dir / "tokenizer.json"));
  } else if (fs::exists(model_dir / "tokenizer.model")) {
    TS_ASSIGN_OR_RETURN(backend, load_tokenizer_model(model_dir, tok_config, tokenizer_class));
  } else {
    return not_found(model_dir.string() +
                     ": no tokenizer.json or tokenizer.model in the model directory");
  }
  TS_ASSIGN_OR_RETURN(nlohmann::json config, read_json_if_exists(model_dir, "config.json"));
  TS_ASSIGN_OR_RETURN(nlohmann::json gen_config,
                      read_json_if_exists(model_dir, "generation_config.json"));

  SpecialTokens special;
  special.bos_token = token_text(tok_config, "bos_token");
  special.eos_token = token_text(tok_config, "eos_token");
  special.pad_token = token_text(tok_config, "pad_token");
  special.unk_token = token_text(tok_config, "unk_token");
  const auto id_of = [&](const std::string& text) -> std::optional<int32_t> {
    if (text.empty()) return std::nullopt;
    return backend->piece_to_id(text);
  };
  special.bos_id = id_of(special.bos_token);
  special.pad_id = id_of(special.pad_token);
  TS_RETURN_IF_ERROR(append_ids(gen_config, "eos_token_id", model_dir / "generation_config.json",
                                &special.eos_ids));
  TS_RETURN_IF_ERROR(
      append_ids(config, "eos_token_id", model_dir / "config.json", &special.eos_ids));
  if (auto eos = id_of(special.eos_token)) {
    if (std::find(special.eos_ids.begin(), special.eos_ids.end(), *eos) == special.eos_ids.end()) {
      special.eos_ids.push_back(*eos);
    }
  }
  if (!special.bos_id && config.is_object() && config.contains("bos_token_id") &&
      config["bos_token_id"].is_number_integer()) {
    special.bos_id = config["bos_token_id"].get<int32_t>();
  }
  if (special.eos_token.empty() && !special.eos_ids.empty()) {
    special.eos_token = backend->id_to_piece(special.eos_ids[0]).value_or("");
  }
  if (special.bos_token.empty() && special.bos_id) {
    special.bos_token = backend->id_to_piece(*special.bos_id).value_or("");
  }

  // ChatGLM's tokenizers put [gMASK] and sop (GLM-4: <sop>) before every sequence.
  // (A tokenizer.json converted from them carries its own post-processor instead.)
  if (!from_json &&
      (tokenizer_class == "ChatGLMTokenizer" || tokenizer_class == "ChatGLM4Tokenizer")) {
    const auto gmask = backend->piece_to_id("[gMASK]");
    const auto sop = backend->piece_to_id(tokenizer_class == "ChatGLMTokenizer" ? "sop" : "<sop>");
    if (!gmask || !sop) {
      return data_loss((model_dir / "tokenizer_config.json").string() + ": " + tokenizer_class +
                       " without the [gMASK] and sop tokens");
    }
    backend->set_special_wrapping({*gmask, *sop}, {});
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(backend), std::move(special)));
  }
  // transformers' Llama/Gemma tokenizers rebuild the post-processor from add_bos_token /
  // add_eos_token (defaults true / false); the slow SentencePiece tokenizer does the same.
  const bool llama_style = tokenizer_class.find("Llama") != std::string::npos ||
                           tokenizer_class.find("Gemma") != std::string::npos;
  const bool has_flags = tok_config.is_object() && (tok_config.contains("add_bos_token") ||
                                                    tok_config.contains("add_eos_token"));
  if (!from_json || (llama_style && has_flags)) {
    const bool add_bos = tok_config.is_object() ? tok_config.value("add_bos_token", true) : true;
    const bool add_eos = tok_config.is_object() ? tok_config.value("add_eos_token", false) : false;
    std::vector<int32_t> prefix, suffix;
    if (add_bos && special.bos_id) prefix.push_back(*special.bos_id);
    if (add_eos) {
      if (auto eos = id_of(special.eos_token)) suffix.push_back(*eos);
    }
    backend->set_special_wrapping(std::move(prefix), std::move(suffix));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(backend), std::move(special)));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::load_gguf(const fs::path& gguf_path) {
  TS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(gguf_path));
  return from_gguf(file->contents());
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufContents& contents) {
  TS_ASSIGN_OR_RETURN(tokenizer::GgufTokenizerMetadata meta,
                      tokenizer::read_gguf_tokenizer(contents));
  TS_ASSIGN_OR_RETURN(std::string json, tokenizer::gguf_tokenizer_json(meta));
  TS_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::HfTokenizer> backend,
                      tokenizer::HfTokenizer::parse(json, contents.file_name));
  const auto text_of = [&](std::optional<int32_t> id) {
    return id ? meta.tokens[static_cast<size_t>(*id)] : std::string();
  };
  SpecialTokens special;
  special.bos_token = text_of(meta.bos_id);
  special.eos_token = text_of(meta.eos_id);
  special.pad_token = text_of(meta.pad_id);
  special.unk_token = text_of(meta.unk_id);
  special.bos_id = meta.bos_id;
  special.eos_ids = tokenizer::gguf_end_of_generation_ids(meta);
  special.pad_id = meta.pad_id;
  // read_gguf_tokenizer guarantees the ids behind add_bos / add_eos.
  std::vector<int32_t> prefix, suffix;
  if (meta.add_bos) prefix.push_back(*meta.bos_id);
  if (meta.add_eos) suffix.push_back(*meta.eos_id);
  backend->set_special_wrapping(std::move(prefix), std::move(suffix));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(backend), std::move(special)));
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text,
                                               bool add_special_tokens) const {
  return backend_->encode(text, add_special_tokens);
}

Result<std::string> Tokenizer::decode(std::span<const int32_t> ids,
                                      bool skip_special_tokens) const {
  return backend_->decode(ids, skip_special_tokens);
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  return backend_->id_to_piece(id).value_or("");
}

std::optional<int32_t> Tokenizer::piece_to_id(std::string_view piece) const {
  return backend_->piece_to_id(piece);
}

int32_t Tokenizer::vocab_size() const { return backend_->vocab_size(); }

bool Tokenizer::is_special(int32_t id) const { return backend_->is_special(id); }

bool Tokenizer::is_eos(int32_t id) const {
  return std::find(special_.eos_ids.begin(), special_.eos_ids.end(), id) != special_.eos_ids.end();
}

}  // namespace tierserve

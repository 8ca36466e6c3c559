// Tokenizer: text <-> token ids for a Hugging Face model directory, matching the ids that
// Hugging Face's tokenizer.encode returns.
//
// Sources, in order: tokenizer.json (BPE: byte-level or SentencePiece-style), else
// tokenizer.model (SentencePiece). Special tokens and BOS/EOS come from tokenizer_config.json,
// config.json and generation_config.json. A GGUF file's tokenizer metadata is converted to a
// tokenizer.json (gguf_tokenizer.h). Immutable after load; safe to share between threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tierserve {
struct GgufContents;
namespace tokenizer {
class TokenizerBackend;
}

// BOS/EOS and friends, as the model directory's configuration files give them.
struct SpecialTokens {
  std::string bos_token;          // text of BOS ("" when there is none)
  std::string eos_token;          // text of the tokenizer's EOS ("" when there is none)
  std::string pad_token;          // text of the padding token, or ""
  std::string unk_token;          // text of the unknown token, or ""
  std::optional<int32_t> bos_id;  // id of BOS
  std::vector<int32_t> eos_ids;   // every id that ends generation (generation_config first)
  std::optional<int32_t> pad_id;  // id of the padding token
};

class Tokenizer {
 public:
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Loads the tokenizer of `model_dir`, or of a GGUF file when `model_dir` is a regular file whose
  // name ends in ".gguf" (load_gguf). Errors name the file and what is missing, malformed or
  // unsupported.
  static Result<std::unique_ptr<Tokenizer>> load(const std::filesystem::path& model_dir);

  // The tokenizer stored in the GGUF file `gguf_path` (its tokenizer.ggml.* metadata). BOS/EOS,
  // padding and unknown tokens come from the tokenizer.ggml.*_token_id keys; encode adds BOS/EOS
  // per tokenizer.ggml.add_bos_token / add_eos_token, or llama.cpp's defaults when absent (BOS for
  // a "llama" vocabulary and for the Llama-3 pre-tokenizers). Errors: those of GgufFile::open and
  // tokenizer::read_gguf_tokenizer, naming the file and the key.
  static Result<std::unique_ptr<Tokenizer>> load_gguf(const std::filesystem::path& gguf_path);
  // The same for a GGUF file already opened (its contents().file_name names it in errors).
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufContents& contents);

  // The ids of `text`; `add_special_tokens` adds BOS etc. as Hugging Face's encode does by
  // default. Invalid UTF-8 is kInvalidArgument naming the byte offset.
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = true) const;

  // The text of `ids` as Hugging Face's decode gives it (invalid UTF-8 becomes U+FFFD; ids outside
  // the vocabulary are skipped).
  Result<std::string> decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The vocabulary string of `id` ("Ġthe", "▁the", "<0x0A>", "<|eot_id|>"), or "" when unknown.
  std::string id_to_piece(int32_t id) const;
  // The id of a vocabulary string or added token, or nullopt.
  std::optional<int32_t> piece_to_id(std::string_view piece) const;
  // One more than the largest token id (added tokens included).
  int32_t vocab_size() const;
  // True for special tokens (skipped by decode(skip_special_tokens=true)).
  bool is_special(int32_t id) const;
  bool is_eos(int32_t id) const;
  const SpecialTokens& special_tokens() const { return special_; }

 private:
  Tokenizer(std::unique_ptr<tokenizer::TokenizerBackend> backend, SpecialTokens special);
  std::unique_ptr<tokenizer::TokenizerBackend> backend_;
  SpecialTokens special_;
};

}  // namespace tierserve

// Tokenizer: text <-> token ids for a Hugging Face model directory, matching the ids that
// Hugging Face's tokenizer.encode returns.
//
// Sources, in order: tokenizer.json (BPE: byte-level or SentencePiece-style), else
// tokenizer.model (SentencePiece). Special tokens and BOS/EOS come from tokenizer_config.json,
// config.json and generation_config.json. Immutable after load; safe to share between threads.
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

  // Loads the tokenizer of `model_dir`. Errors name the file and what is missing, malformed or
  // unsupported.
  static Result<std::unique_ptr<Tokenizer>> load(const std::filesystem::path& model_dir);

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

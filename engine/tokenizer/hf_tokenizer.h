// HfTokenizer: a tokenizer.json with a BPE model (byte-level like Llama 3 / Qwen2 / GPT-2, or
// SentencePiece-style with byte fallback like Llama 2 / Mistral), run through Hugging Face's
// pipeline: added tokens, normalizer, pre-tokenizer, model, post-processor; decoder for decode.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/post_processor.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/tokenizer_backend.h"

namespace tierserve::tokenizer {

class HfTokenizer final : public TokenizerBackend {
 public:
  // Loads `path` (a tokenizer.json); errors name the file and what is wrong or unsupported.
  static Result<std::unique_ptr<HfTokenizer>> load(const std::filesystem::path& path);
  // Parses tokenizer.json text; `name` is used in errors.
  static Result<std::unique_ptr<HfTokenizer>> parse(std::string_view json, const std::string& name);

  Result<std::vector<int32_t>> encode(std::string_view text,
                                      bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::optional<std::string> id_to_piece(int32_t id) const override;
  std::optional<int32_t> piece_to_id(std::string_view piece) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  bool is_special(int32_t id) const override { return special_ids_.count(id) > 0; }
  void set_special_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) override;

 private:
  HfTokenizer() = default;
  // Normalizes, pre-tokenizes and encodes one plain-text segment of the raw text.
  void encode_segment(std::string_view text, bool at_start, BpeCache* cache,
                      std::vector<int32_t>* out) const;

  BpeModel model_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  PostProcessor post_processor_;
  Decoder decoder_;
  AddedTokenMatcher raw_tokens_;         // normalized=false
  AddedTokenMatcher normalized_tokens_;  // normalized=true, contents normalized
  std::unordered_map<int32_t, std::string> added_by_id_;
  TokenMap added_by_content_;
  std::unordered_set<int32_t> special_ids_;
  int32_t vocab_size_ = 0;
  mutable std::mutex cache_mutex_;  // guards cache_; encode skips the cache when it is busy
  mutable BpeCache cache_;
};

}  // namespace tierserve::tokenizer

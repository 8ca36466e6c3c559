// SpTokenizer: a SentencePiece tokenizer.model through libsentencepiece, used when a model
// directory has no tokenizer.json. Control symbols (<s>, </s>, ...) and <unk> written in the text
// are split out first and become their own ids, as transformers' slow tokenizers do; every text
// chunk between them is encoded by SentencePiece itself (which matches user-defined symbols).
// Tokens appended after the model's pieces (ChatGLM's [gMASK], sop, <|user|>, ...) are split out
// the same way.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/tokenizer_backend.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tierserve::tokenizer {

class SpTokenizer final : public TokenizerBackend {
 public:
  // Loads `path`; by default encode(add_special_tokens=true) prepends BOS (LlamaTokenizer).
  static Result<std::unique_ptr<SpTokenizer>> load(const std::filesystem::path& path);
  ~SpTokenizer() override;

  Result<std::vector<int32_t>> encode(std::string_view text,
                                      bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::optional<std::string> id_to_piece(int32_t id) const override;
  std::optional<int32_t> piece_to_id(std::string_view piece) const override;
  int32_t vocab_size() const override;
  bool is_special(int32_t id) const override;
  void set_special_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) override;

  // Appends tokens with ids from the model's piece count on, in order (ChatGLMTokenizer's
  // special tokens), which win over a piece of the same text. Load time only.
  Status append_tokens(const std::vector<std::string>& texts, bool special);
  // The model's own piece count (appended tokens excluded).
  int32_t piece_count() const;

 private:
  SpTokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  AddedTokenMatcher specials_;         // control symbols, <unk> and appended tokens
  std::vector<AddedToken> split_out_;  // what specials_ matches
  std::vector<AddedToken> appended_;   // ids piece_count() + i
  std::vector<int32_t> prefix_, suffix_;
};

}  // namespace tierserve::tokenizer

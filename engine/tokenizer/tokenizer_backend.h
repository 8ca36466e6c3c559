// TokenizerBackend: what the Tokenizer front end (tokenizer.h) needs from one tokenizer format.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tierserve::tokenizer {

// Implementations are immutable after loading and safe to use from several threads.
class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  // Ids of `text` (validated UTF-8); `add_special_tokens` applies the post-processor / BOS.
  virtual Result<std::vector<int32_t>> encode(std::string_view text,
                                              bool add_special_tokens) const = 0;
  // Text of `ids`; ids outside the vocabulary are skipped, as Hugging Face does.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // The vocabulary string of `id` (e.g. "Ġthe", "▁the", "<0x0A>"), or nullopt.
  virtual std::optional<std::string> id_to_piece(int32_t id) const = 0;
  virtual std::optional<int32_t> piece_to_id(std::string_view piece) const = 0;
  // One more than the largest id, added tokens included.
  virtual int32_t vocab_size() const = 0;
  // True for special tokens (added tokens marked special, or control symbols).
  virtual bool is_special(int32_t id) const = 0;
  // Replaces the ids that add_special_tokens puts around a sequence (Llama-2 style
  // add_bos_token / add_eos_token overrides).
  virtual void set_special_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) = 0;
};

}  // namespace tierserve::tokenizer

// BpeModel: Hugging Face's "BPE" model from tokenizer.json: a vocabulary, rank-ordered merges,
// optional byte fallback (<0xNN> tokens), unk fusing and ignore_merges, with the same merge order
// as tokenizers' Word::merge_all (lowest rank first, leftmost on ties).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/tokenizer/merge_map.h"

namespace tierserve::tokenizer {

// Hash for heterogeneous (string_view) lookup in string-keyed maps.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Words already encoded, keyed by the model's input text. Not thread-safe: one user at a time.
class BpeCache {
 public:
  static constexpr size_t kCapacity = 10000;    // entries, as in Hugging Face's BPE cache
  static constexpr size_t kMaxWordBytes = 256;  // longer words are not cached
  const std::vector<int32_t>* find(std::string_view word) const;
  void insert(std::string_view word, const int32_t* ids, size_t count);

 private:
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map_;
};

class BpeModel {
 public:
  // Parses the "model" object of tokenizer.json (type "BPE"). Errors say what is malformed.
  static Result<BpeModel> from_json(const nlohmann::json& model);

  // Switches the model to raw-byte input (the pre-tokenizer ends with ByteLevel): each input byte
  // starts as the token of its GPT-2 unicode character. Fails when one of them is missing.
  Status enable_byte_level();
  bool byte_level() const { return byte_level_; }

  // Appends the ids of one pre-token. In byte-level mode `word` is raw bytes; otherwise it is the
  // normalized text itself. `cache` may be null.
  void tokenize(std::string_view word, BpeCache* cache, std::vector<int32_t>* out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id` (GPT-2 unicode form for byte-level), or nullptr.
  const std::string* id_to_token(int32_t id) const;
  // One more than the largest id in the vocabulary.
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool removed;
  };
  // Initial symbols of a non-byte-level word (characters, byte fallback, unk).
  void split_chars(std::string_view word, std::vector<Symbol>* symbols) const;
  // Applies the merges to `symbols` and appends the surviving ids to `out`.
  void merge_all(std::vector<Symbol>* symbols, std::vector<int32_t>* out) const;
  // Appends the merged ids of `word` (no ignore_merges shortcut), through `cache` when not null.
  void merge_word(std::string_view word, BpeCache* cache, std::vector<int32_t>* out) const;

  TokenMap vocab_;
  TokenMap raw_vocab_;  // byte-level mode: raw bytes -> id
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  MergeMap merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool byte_level_ = false;
  // True when "▁" is a token and no token has "▁" right after another character: then no merge
  // can span the start of a "▁"-run, and a word without a pre-tokenizer (SentencePiece style,
  // where the whole text is one word) is merged piece by piece, each starting at such a run, with
  // the same result as merging it whole, and with the cache.
  bool split_at_metaspace_ = false;
  int32_t byte_ids_[256] = {};           // byte-level: initial token of each byte
  int32_t byte_fallback_ids_[256] = {};  // <0xNN> tokens, -1 when missing
};

}  // namespace tierserve::tokenizer

// The tokenizer stored in a GGUF file's metadata (the tokenizer.ggml.* keys that llama.cpp's
// convert_hf_to_gguf.py writes), converted to the tokenizer.json text that HfTokenizer runs.
//
// Two vocabulary models are supported, as llama.cpp names them in tokenizer.ggml.model:
//   "llama": SentencePiece-style BPE (Llama 1/2, Mistral, Gemma...): pieces with scores, "▁" for
//            spaces, <0xNN> byte-fallback pieces. Converted like transformers' GGUFLlamaConverter
//            (legacy LlamaConverter): merges derived from the scores, Prepend("▁") + Replace
//            normalizer, Replace/ByteFallback/Fuse/Strip decoder.
//   "gpt2":  byte-level BPE (Llama 3, Qwen2, GPT-2...) with tokenizer.ggml.merges; the split regex
//            comes from tokenizer.ggml.pre, as in llama.cpp's llama-vocab.cpp.
// Control tokens (and the unknown token) become special added tokens, user-defined tokens
// non-special added tokens, as llama.cpp matches them in text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/gguf.h"

namespace tierserve::tokenizer {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class GgufTokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The vocabulary model of tokenizer.ggml.model.
enum class GgufVocabModel {
  kLlama,  // "llama": SentencePiece-style BPE with scores and byte fallback
  kGpt2,   // "gpt2": byte-level BPE with merges
};

// The split regex a "gpt2" model uses, from tokenizer.ggml.pre.
enum class GgufPreTokenizer {
  kGpt2,    // "default", "gpt-2", "gpt2" or absent: GPT-2's regex (ByteLevel use_regex)
  kLlama3,  // "llama3", "llama-v3", "llama-bpe" and llama.cpp's aliases: Llama 3's regex
  kQwen2,   // "qwen2", "deepseek-r1-qwen": Qwen2's regex, with an NFC normalizer
};

// A GGUF file's tokenizer metadata, validated: every array has tokens.size() entries and every id
// is inside the vocabulary.
struct GgufTokenizerMetadata {
  std::string file_name;                           // the GGUF file, for errors
  GgufVocabModel model = GgufVocabModel::kLlama;   // tokenizer.ggml.model
  std::string pre_name;                            // tokenizer.ggml.pre as written ("" when absent)
  GgufPreTokenizer pre = GgufPreTokenizer::kGpt2;  // its split regex ("gpt2" model only)
  std::vector<std::string> tokens;         // tokenizer.ggml.tokens: token text by id (non-empty)
  std::vector<float> scores;               // tokenizer.ggml.scores, or empty when absent
  std::vector<GgufTokenType> token_types;  // tokenizer.ggml.token_type, or all kNormal
  std::vector<std::string> merges;         // tokenizer.ggml.merges ("left right"), may be empty
  std::optional<int32_t> bos_id;           // tokenizer.ggml.bos_token_id
  std::optional<int32_t> eos_id;           // tokenizer.ggml.eos_token_id
  std::optional<int32_t> eot_id;           // tokenizer.ggml.eot_token_id (end of turn)
  std::optional<int32_t> eom_id;           // tokenizer.ggml.eom_token_id (end of message)
  std::optional<int32_t> unk_id;           // tokenizer.ggml.unknown_token_id, else the first
                                           // token of type kUnknown ("llama" model only)
  std::optional<int32_t> pad_id;           // tokenizer.ggml.padding_token_id
  // tokenizer.ggml.add_bos_token, or llama.cpp's default when absent: true for the "llama" model
  // and for the Llama-3 pre-tokenizers (llama-vocab.cpp) when the file has a BOS, else false.
  // add_bos implies bos_id and add_eos implies eos_id (an explicit true without one is an error).
  bool add_bos = false;
  bool add_eos = false;  // tokenizer.ggml.add_eos_token (default false)
  // tokenizer.ggml.add_space_prefix ("llama" model; default true): prepend "▁" to the text.
  bool add_space_prefix = true;
};

// Reads and validates the tokenizer metadata of `contents`. Errors name the file and the key:
// kNotFound for a missing tokenizer.ggml.model or tokenizer.ggml.tokens (or the merges of a
// "gpt2" model, or both merges and scores of a "llama" model); kDataLoss for a value of the wrong
// type, an empty vocabulary, arrays of different lengths, an unknown token type, a token that is
// not UTF-8, or an id outside the vocabulary; kUnimplemented for a model other than "llama" and
// "gpt2" or a tokenizer.ggml.pre this build has no regex for.
Result<GgufTokenizerMetadata> read_gguf_tokenizer(const GgufContents& contents);

// The tokenizer.json text for `meta` (see the file comment). It has no post-processor: the caller
// applies add_bos / add_eos with TokenizerBackend::set_special_wrapping. Errors (kDataLoss) name
// the file: a merge that is not two tokens separated by one space.
Result<std::string> gguf_tokenizer_json(const GgufTokenizerMetadata& meta);

// The ids that end generation, after llama.cpp's end-of-generation set: eos, eot and eom when
// given, then every control token whose text is an end-of-turn marker (<|eot_id|>,
// <|end_of_text|>, <|eom_id|>, <|im_end|>, <|endoftext|>, <|end|>, <end_of_turn>, <EOT>, _<EOT>,
// DeepSeek's <｜end▁of▁sentence｜>), without duplicates, eos first. (llama.cpp also promotes a
// non-control token with such a text; here only control tokens count.)
std::vector<int32_t> gguf_end_of_generation_ids(const GgufTokenizerMetadata& meta);

// tokenizer.chat_template, or nullopt when the file has none. Errors: kDataLoss (naming the file
// and key) when it is not a string; for the path overload, those of GgufFile::open.
Result<std::optional<std::string>> gguf_chat_template(const GgufContents& contents);
Result<std::optional<std::string>> gguf_chat_template(const std::filesystem::path& gguf_path);

}  // namespace tierserve::tokenizer

#include "engine/tokenizer/gguf_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/check.h"
#include "engine/tokenizer/split_scanner.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

constexpr std::string_view kModelKey = "tokenizer.ggml.model";
constexpr std::string_view kPreKey = "tokenizer.ggml.pre";
constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kScoresKey = "tokenizer.ggml.scores";
constexpr std::string_view kTokenTypeKey = "tokenizer.ggml.token_type";
constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";
constexpr std::string_view kAddBosKey = "tokenizer.ggml.add_bos_token";
constexpr std::string_view kAddEosKey = "tokenizer.ggml.add_eos_token";
constexpr std::string_view kBosKey = "tokenizer.ggml.bos_token_id";
constexpr std::string_view kChatTemplateKey = "tokenizer.chat_template";

constexpr const char* kSpace = "\xe2\x96\x81";  // "▁", SentencePiece's space

// `text` in single quotes, cut at 64 bytes, control bytes escaped (it comes from the file).
std::string quote_text(std::string_view text) {
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + (text.size() > 64 ? "...'" : "'");
}

// "<file>: metadata key '<key>': <what>", kDataLoss.
Status key_error(const GgufContents& c, std::string_view key, const std::string& what) {
  return data_loss(c.file_name + ": metadata key " + quote_text(key) + ": " + what);
}

// The split regex of a tokenizer.ggml.pre name, as llama-vocab.cpp maps them; nullopt when this
// build has no regex for it. An absent name is "default".
std::optional<GgufPreTokenizer> pre_tokenizer_of(std::string_view name) {
  if (name.empty() || name == "default" || name == "gpt-2" || name == "gpt2") {
    return GgufPreTokenizer::kGpt2;
  }
  for (std::string_view llama3 :
       {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}) {
    if (name == llama3) return GgufPreTokenizer::kLlama3;
  }
  if (name == "qwen2" || name == "deepseek-r1-qwen") return GgufPreTokenizer::kQwen2;
  return std::nullopt;
}

// An optional bool key: `fallback` when absent, an error for another type.
Result<bool> optional_bool(const GgufContents& c, std::string_view key, bool fallback) {
  if (c.find(key) == nullptr) return fallback;
  return c.get_bool(key);
}

// An optional token id key, checked against the vocabulary size `n`.
Result<std::optional<int32_t>> optional_id(const GgufContents& c, std::string_view key, size_t n) {
  const GgufValue* v = c.find(key);
  if (v == nullptr) return std::optional<int32_t>();
  const std::optional<int64_t> id = v->as_int();
  if (!id) return key_error(c, key, "expected a token id, found " + v->describe());
  if (*id < 0 || static_cast<uint64_t>(*id) >= n) {
    return key_error(c, key,
                     "token id " + std::to_string(*id) + " is outside the vocabulary of " +
                         std::to_string(n) + " tokens (" + std::string(kTokensKey) + ")");
  }
  return std::optional<int32_t>(static_cast<int32_t>(*id));
}

// "<n> entries, but tokenizer.ggml.tokens has <m>".
Status length_error(const GgufContents& c, std::string_view key, size_t n, size_t num_tokens) {
  return key_error(c, key,
                   std::to_string(n) + " entries, but " + std::string(kTokensKey) + " has " +
                       std::to_string(num_tokens));
}

// tokenizer.ggml.scores, when present: finite floats, one per token.
Status read_scores(const GgufContents& c, GgufTokenizerMetadata* meta) {
  const GgufValue* v = c.find(kScoresKey);
  if (v == nullptr) return Status::ok();
  const std::vector<double>* scores = v->floats();
  if (scores == nullptr) return key_error(c, kScoresKey, "expected floats, found " + v->describe());
  if (scores->size() != meta->tokens.size()) {
    return length_error(c, kScoresKey, scores->size(), meta->tokens.size());
  }
  meta->scores.reserve(scores->size());
  for (size_t i = 0; i < scores->size(); ++i) {
    const double s = (*scores)[i];
    // NaN would break the ordering of the derived merges; a finite double beyond float's range
    // has no float value.
    if (!std::isfinite(s) || std::fabs(s) > std::numeric_limits<float>::max()) {
      return key_error(c, kScoresKey, "score of token " + std::to_string(i) + " is not finite");
    }
    meta->scores.push_back(static_cast<float>(s));
  }
  return Status::ok();
}

// tokenizer.ggml.token_type, when present: one integer in [0, 6] per token; else all normal.
Status read_token_types(const GgufContents& c, GgufTokenizerMetadata* meta) {
  const size_t n = meta->tokens.size();
  const GgufValue* v = c.find(kTokenTypeKey);
  if (v == nullptr) {
    meta->token_types.assign(n, GgufTokenType::kNormal);
    return Status::ok();
  }
  std::vector<int64_t> types;
  if (const auto* ints = v->ints()) {
    types = *ints;
  } else if (const auto* uints = v->uints()) {
    for (uint64_t u : *uints) types.push_back(u > 100 ? 100 : static_cast<int64_t>(u));
  } else {
    return key_error(c, kTokenTypeKey, "expected integers, found " + v->describe());
  }
  if (types.size() != n) return length_error(c, kTokenTypeKey, types.size(), n);
  meta->token_types.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (types[i] < 0 || types[i] > 6) {
      return key_error(c, kTokenTypeKey,
                       "token " + std::to_string(i) + " has type " + std::to_string(types[i]) +
                           ", expected 0 to 6");
    }
    meta->token_types.push_back(static_cast<GgufTokenType>(types[i]));
  }
  return Status::ok();
}

// The added token of `id` in tokenizer.json form.
nlohmann::json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

// Byte offsets of the code-point boundaries strictly inside `text` (valid UTF-8).
std::vector<size_t> inner_boundaries(std::string_view text) {
  std::vector<size_t> out;
  size_t pos = 0;
  while (pos < text.size()) {
    pos += static_cast<size_t>(utf8_sequence_length(static_cast<unsigned char>(text[pos])));
    if (pos < text.size()) out.push_back(pos);
  }
  return out;
}

// The merges transformers' GGUFTokenizerSkeleton derives from SentencePiece scores: for each
// distinct token (first-occurrence order; the score of its last occurrence, as a Python dict
// comprehension keeps), every split at a code-point boundary into two tokens, those ordered by
// (left score, right score) descending; then all of them ordered by the whole token's score,
// descending. Both sorts are stable, as Python's are.
nlohmann::json merges_from_scores(const GgufTokenizerMetadata& meta) {
  std::unordered_map<std::string_view, float> score_of;
  std::vector<std::string_view> order;
  for (size_t i = 0; i < meta.tokens.size(); ++i) {
    const std::string_view t = meta.tokens[i];
    if (score_of.find(t) == score_of.end()) order.push_back(t);
    score_of[t] = meta.scores[i];
  }
  struct Merge {
    std::string_view left, right;
    float score;  // the merged token's
  };
  std::vector<Merge> merges;
  std::vector<Merge> local;
  for (std::string_view t : order) {
    local.clear();
    for (size_t k : inner_boundaries(t)) {
      const std::string_view l = t.substr(0, k), r = t.substr(k);
      if (score_of.count(l) && score_of.count(r)) local.push_back({l, r, score_of.at(t)});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Merge& a, const Merge& b) {
      const float al = score_of.at(a.left), bl = score_of.at(b.left);
      if (al != bl) return al > bl;
      return score_of.at(a.right) > score_of.at(b.right);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  nlohmann::json out = nlohmann::json::array();
  for (const Merge& m : merges) out.push_back({std::string(m.left), std::string(m.right)});
  return out;
}

// tokenizer.ggml.merges as [left, right] pairs; each must hold exactly one space.
Result<nlohmann::json> given_merges(const GgufTokenizerMetadata& meta) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < meta.merges.size(); ++i) {
    const std::string& m = meta.merges[i];
    const size_t space = m.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == m.size() ||
        m.find(' ', space + 1) != std::string::npos) {
      return data_loss(meta.file_name + ": metadata key " + quote_text(kMergesKey) + ": merge " +
                       std::to_string(i) + " (" + quote_text(m) +
                       ") is not two tokens separated by one space");
    }
    out.push_back({m.substr(0, space), m.substr(space + 1)});
  }
  return out;
}

}  // namespace

Result<GgufTokenizerMetadata> read_gguf_tokenizer(const GgufContents& c) {
  GgufTokenizerMetadata meta;
  meta.file_name = c.file_name;
  TS_ASSIGN_OR_RETURN(const std::string model, c.get_string(kModelKey));
  if (model == "llama") {
    meta.model = GgufVocabModel::kLlama;
  } else if (model == "gpt2") {
    meta.model = GgufVocabModel::kGpt2;
  } else {
    return unimplemented(c.file_name + ": metadata key " + quote_text(kModelKey) +
                         ": tokenizer model " + quote_text(model) +
                         " is not supported (supported: 'llama', 'gpt2')");
  }

  TS_ASSIGN_OR_RETURN(const GgufValue* tokens, c.get_array(kTokensKey, GgufValueType::kString));
  meta.tokens = *tokens->strings();
  if (meta.tokens.empty()) return key_error(c, kTokensKey, "the vocabulary is empty");
  if (meta.tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return key_error(c, kTokensKey, "more than 2^31 - 1 tokens");
  }
  for (size_t i = 0; i < meta.tokens.size(); ++i) {
    if (!validate_utf8(meta.tokens[i]).is_ok()) {
      return key_error(c, kTokensKey, "token " + std::to_string(i) + " is not valid UTF-8");
    }
  }
  const size_t n = meta.tokens.size();
  TS_RETURN_IF_ERROR(read_scores(c, &meta));
  TS_RETURN_IF_ERROR(read_token_types(c, &meta));
  if (c.find(kMergesKey) != nullptr || meta.model == GgufVocabModel::kGpt2) {
    TS_ASSIGN_OR_RETURN(const GgufValue* merges, c.get_array(kMergesKey, GgufValueType::kString));
    meta.merges = *merges->strings();
  }
  if (meta.model == GgufVocabModel::kLlama && meta.merges.empty() && meta.scores.empty()) {
    return not_found(c.file_name + ": metadata key " + quote_text(kScoresKey) +
                     " not found: a 'llama' tokenizer without " + std::string(kMergesKey) +
                     " needs the scores to derive its merges");
  }

  TS_ASSIGN_OR_RETURN(meta.bos_id, optional_id(c, kBosKey, n));
  TS_ASSIGN_OR_RETURN(meta.eos_id, optional_id(c, "tokenizer.ggml.eos_token_id", n));
  TS_ASSIGN_OR_RETURN(meta.eot_id, optional_id(c, "tokenizer.ggml.eot_token_id", n));
  TS_ASSIGN_OR_RETURN(meta.eom_id, optional_id(c, "tokenizer.ggml.eom_token_id", n));
  TS_ASSIGN_OR_RETURN(meta.unk_id, optional_id(c, "tokenizer.ggml.unknown_token_id", n));
  TS_ASSIGN_OR_RETURN(meta.pad_id, optional_id(c, "tokenizer.ggml.padding_token_id", n));
  if (!meta.unk_id && meta.model == GgufVocabModel::kLlama) {
    const auto it =
        std::find(meta.token_types.begin(), meta.token_types.end(), GgufTokenType::kUnknown);
    if (it != meta.token_types.end()) {
      meta.unk_id = static_cast<int32_t>(it - meta.token_types.begin());
    }
  }

  if (c.find(kPreKey) != nullptr) {
    TS_ASSIGN_OR_RETURN(meta.pre_name, c.get_string(kPreKey));
  }
  if (meta.model == GgufVocabModel::kGpt2) {
    const std::optional<GgufPreTokenizer> kind = pre_tokenizer_of(meta.pre_name);
    if (!kind) {
      return unimplemented(c.file_name + ": metadata key " + quote_text(kPreKey) +
                           ": pre-tokenizer " + quote_text(meta.pre_name) +
                           " is not supported (supported: default/gpt-2, llama-bpe/llama3, "
                           "qwen2)");
    }
    meta.pre = *kind;
  }

  // llama.cpp adds BOS by default for SentencePiece models and the Llama-3 pre-tokenizers; a
  // default cannot add a BOS the file does not have, an explicit true must.
  const bool bos_default =
      meta.model == GgufVocabModel::kLlama || meta.pre == GgufPreTokenizer::kLlama3;
  TS_ASSIGN_OR_RETURN(meta.add_bos, optional_bool(c, kAddBosKey, bos_default && meta.bos_id));
  TS_ASSIGN_OR_RETURN(meta.add_eos, optional_bool(c, kAddEosKey, false));
  if (meta.add_bos && !meta.bos_id) {
    return key_error(c, kAddBosKey, "true, but the file has no " + std::string(kBosKey));
  }
  if (meta.add_eos && !meta.eos_id) {
    return key_error(c, kAddEosKey, "true, but the file has no tokenizer.ggml.eos_token_id");
  }
  TS_ASSIGN_OR_RETURN(meta.add_space_prefix,
                      optional_bool(c, "tokenizer.ggml.add_space_prefix", true));
  return meta;
}

Result<std::string> gguf_tokenizer_json(const GgufTokenizerMetadata& meta) {
  TS_CHECK(!meta.tokens.empty() && meta.token_types.size() == meta.tokens.size())
      << "gguf_tokenizer_json needs metadata from read_gguf_tokenizer";
  const bool llama = meta.model == GgufVocabModel::kLlama;
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < meta.tokens.size(); ++i) vocab[meta.tokens[i]] = i;  // last one wins

  nlohmann::json merges;
  if (llama && meta.merges.empty()) {
    merges = merges_from_scores(meta);
  } else {
    TS_ASSIGN_OR_RETURN(merges, given_merges(meta));
  }

  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < meta.tokens.size(); ++i) {
    const GgufTokenType type = meta.token_types[i];
    if (type == GgufTokenType::kControl || type == GgufTokenType::kUnknown ||
        type == GgufTokenType::kUserDefined) {
      added.push_back(added_token(static_cast<int32_t>(i), meta.tokens[i],
                                  /*special=*/type != GgufTokenType::kUserDefined));
    }
  }

  nlohmann::json model = {
      {"type", "BPE"},
      {"dropout", nullptr},
      {"unk_token", llama && meta.unk_id ? nlohmann::json(meta.tokens[*meta.unk_id]) : nullptr},
      {"continuing_subword_prefix", nullptr},
      {"end_of_word_suffix", nullptr},
      {"fuse_unk", llama},
      {"byte_fallback", llama},
      // llama.cpp takes a Llama-3 pre-token that is itself a token whole, as tokenizers'
      // ignore_merges does.
      {"ignore_merges", !llama && meta.pre == GgufPreTokenizer::kLlama3},
      {"vocab", std::move(vocab)},
      {"merges", std::move(merges)}};

  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", std::move(added)},
                      {"post_processor", nullptr},
                      {"model", std::move(model)}};
  if (llama) {
    // transformers' LlamaConverter for a legacy tokenizer (Llama 2's tokenizer.json).
    nlohmann::json normalizers = nlohmann::json::array();
    if (meta.add_space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
    normalizers.push_back(
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", std::move(normalizers)}};
    j["pre_tokenizer"] = nullptr;
    nlohmann::json decoders = {
        {{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}}};
    if (meta.add_space_prefix) {
      decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    }
    j["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(decoders)}};
  } else {
    const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                       {"add_prefix_space", false},
                                       {"trim_offsets", true},
                                       {"use_regex", meta.pre == GgufPreTokenizer::kGpt2}};
    if (meta.pre == GgufPreTokenizer::kGpt2) {
      j["pre_tokenizer"] = byte_level;  // GPT2Converter: ByteLevel applies GPT-2's regex
    } else {
      const std::string_view regex =
          meta.pre == GgufPreTokenizer::kLlama3 ? kLlama3SplitRegex : kQwen2SplitRegex;
      j["pre_tokenizer"] = {{"type", "Sequence"},
                            {"pretokenizers",
                             {{{"type", "Split"},
                               {"pattern", {{"Regex", std::string(regex)}}},
                               {"behavior", "Isolated"},
                               {"invert", false}},
                              byte_level}}};
    }
    // transformers' Qwen2Converter normalizes to NFC (llama.cpp does not normalize).
    j["normalizer"] =
        meta.pre == GgufPreTokenizer::kQwen2 ? nlohmann::json{{"type", "NFC"}} : nlohmann::json();
    j["decoder"] = {{"type", "ByteLevel"},
                    {"add_prefix_space", true},
                    {"trim_offsets", true},
                    {"use_regex", true}};
  }
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {  // tokens were validated as UTF-8
    return data_loss(meta.file_name + ": tokenizer metadata: " + e.what());
  }
}

std::vector<int32_t> gguf_end_of_generation_ids(const GgufTokenizerMetadata& meta) {
  std::vector<int32_t> ids;
  const auto add = [&](std::optional<int32_t> id) {
    if (id && std::find(ids.begin(), ids.end(), *id) == ids.end()) ids.push_back(*id);
  };
  add(meta.eos_id);
  add(meta.eot_id);
  add(meta.eom_id);
  static constexpr std::string_view kEndOfTurn[] = {
      "<|eot_id|>",           "<|end_of_text|>", "<|eom_id|>",
      "<|im_end|>",           "<|endoftext|>",   "<|end|>",
      "<end_of_turn>",        "<EOT>",           "_<EOT>",
      "<｜end▁of▁sentence｜>"};  // DeepSeek's
  for (size_t i = 0; i < meta.tokens.size(); ++i) {
    if (meta.token_types[i] != GgufTokenType::kControl) continue;
    for (std::string_view text : kEndOfTurn) {
      if (meta.tokens[i] == text) add(static_cast<int32_t>(i));
    }
  }
  return ids;
}

Result<std::optional<std::string>> gguf_chat_template(const GgufContents& contents) {
  if (contents.find(kChatTemplateKey) == nullptr) return std::optional<std::string>();
  TS_ASSIGN_OR_RETURN(std::string text, contents.get_string(kChatTemplateKey));
  return std::optional<std::string>(std::move(text));
}

Result<std::optional<std::string>> gguf_chat_template(const std::filesystem::path& gguf_path) {
  TS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(gguf_path));
  return gguf_chat_template(file->contents());
}

}  // namespace tierserve::tokenizer

#include "engine/tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "common/file.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::filesystem::path& path) {
  TS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse(text, path.string());
}

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::parse(std::string_view json_text,
                                                        const std::string& name) {
  const auto fail = [&](const Status& s) { return s.with_context(name); };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    return data_loss(name + ": not valid JSON: " + e.what());
  }
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  std::vector<AddedToken> raw, normalized;
  try {
    const auto& model = j.at("model");
    const std::string type = model.value("type", "BPE");
    if (type != "BPE") return unimplemented(name + ": model type \"" + type + "\" (only BPE)");
    auto bpe = BpeModel::from_json(model);
    if (!bpe.is_ok()) return fail(bpe.status());
    t->model_ = std::move(bpe).value();

    auto normalizer = Normalizer::from_json(j.value("normalizer", nlohmann::json()));
    if (!normalizer.is_ok()) return fail(normalizer.status());
    t->normalizer_ = std::move(normalizer).value();
    auto pre = PreTokenizer::from_json(j.value("pre_tokenizer", nlohmann::json()));
    if (!pre.is_ok()) return fail(pre.status());
    t->pre_tokenizer_ = std::move(pre).value();
    auto post = PostProcessor::from_json(j.value("post_processor", nlohmann::json()));
    if (!post.is_ok()) return fail(post.status());
    t->post_processor_ = std::move(post).value();
    auto decoder = Decoder::from_json(j.value("decoder", nlohmann::json()));
    if (!decoder.is_ok()) return fail(decoder.status());
    t->decoder_ = std::move(decoder).value();

    if (t->pre_tokenizer_.ends_with_byte_level()) {
      if (Status s = t->model_.enable_byte_level(); !s.is_ok()) return fail(s);
    }
    t->vocab_size_ = t->model_.vocab_size();
    for (const auto& a : j.value("added_tokens", nlohmann::json::array())) {
      AddedToken token;
      token.id = a.at("id").get<int32_t>();
      token.content = a.at("content").get<std::string>();
      token.single_word = a.value("single_word", false);
      token.lstrip = a.value("lstrip", false);
      token.rstrip = a.value("rstrip", false);
      token.normalized = a.value("normalized", false);
      token.special = a.value("special", false);
      if (token.id < 0) return data_loss(name + ": added token with a negative id");
      t->vocab_size_ = std::max(t->vocab_size_, token.id + 1);
      t->added_by_id_[token.id] = token.content;
      t->added_by_content_[token.content] = token.id;
      if (token.special) t->special_ids_.insert(token.id);
      if (token.normalized) {
        t->normalizer_.normalize(&token.content);
        normalized.push_back(std::move(token));
      } else {
        raw.push_back(std::move(token));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return data_loss(name + ": " + e.what());
  }
  t->raw_tokens_ = AddedTokenMatcher(std::move(raw));
  t->normalized_tokens_ = AddedTokenMatcher(std::move(normalized));
  return t;
}

void HfTokenizer::encode_segment(std::string_view text, bool at_start, BpeCache* cache,
                                 std::vector<int32_t>* out) const {
  thread_local PreTokens pre;
  pre.text.assign(text);
  normalizer_.normalize(&pre.text);
  std::vector<Segment> parts;
  if (normalized_tokens_.empty()) {
    parts.push_back(Segment{-1, 0, pre.text.size()});
  } else {
    normalized_tokens_.split(pre.text, &parts);
  }
  const std::string normalized = parts.size() == 1 ? std::string() : pre.text;
  for (const Segment& part : parts) {
    if (part.id >= 0) {
      out->push_back(part.id);
      continue;
    }
    if (parts.size() != 1) pre.text = normalized.substr(part.begin, part.end - part.begin);
    pre_tokenizer_.pre_tokenize(&pre, at_start && part.begin == 0);
    for (const auto& [begin, end] : pre.ranges) {
      model_.tokenize(std::string_view(pre.text).substr(begin, end - begin), cache, out);
    }
  }
}

Result<std::vector<int32_t>> HfTokenizer::encode(std::string_view text,
                                                 bool add_special_tokens) const {
  TS_RETURN_IF_ERROR(validate_utf8(text));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Segment> segments;
  raw_tokens_.split(text, &segments);
  std::unique_lock<std::mutex> lock(cache_mutex_, std::try_to_lock);
  BpeCache* cache = lock.owns_lock() ? &cache_ : nullptr;
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else if (s.end > s.begin) {
      encode_segment(text.substr(s.begin, s.end - s.begin), s.begin == 0, cache, &ids);
    }
  }
  if (add_special_tokens) post_processor_.process(&ids);
  return ids;
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    if (auto piece = id_to_piece(id)) tokens.push_back(std::move(*piece));
  }
  return decoder_.decode(std::move(tokens));
}

std::optional<std::string> HfTokenizer::id_to_piece(int32_t id) const {
  if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) return it->second;
  if (const std::string* token = model_.id_to_token(id)) return *token;
  return std::nullopt;
}

std::optional<int32_t> HfTokenizer::piece_to_id(std::string_view piece) const {
  if (const auto it = added_by_content_.find(piece); it != added_by_content_.end()) {
    return it->second;
  }
  return model_.token_to_id(piece);
}

void HfTokenizer::set_special_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  post_processor_ = PostProcessor::with_wrapping(std::move(prefix), std::move(suffix));
}

}  // namespace tierserve::tokenizer

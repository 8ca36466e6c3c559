#include "engine/tokenizer/sp_tokenizer.h"

#include <sentencepiece_processor.h>

#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {

SpTokenizer::SpTokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SpTokenizer::~SpTokenizer() = default;

Result<std::unique_ptr<SpTokenizer>> SpTokenizer::load(const std::filesystem::path& path) {
  std::unique_ptr<SpTokenizer> t(new SpTokenizer());
  const auto status = t->sp_->Load(path.string());
  if (!status.ok()) return data_loss(path.string() + ": " + status.ToString());
  std::vector<AddedToken> specials;
  for (int id = 0; id < t->sp_->GetPieceSize(); ++id) {
    if (t->sp_->IsControl(id) || t->sp_->IsUnknown(id)) {
      AddedToken token;
      token.id = id;
      token.content = t->sp_->IdToPiece(id);
      token.special = true;
      specials.push_back(std::move(token));
    }
  }
  t->split_out_ = specials;
  t->specials_ = AddedTokenMatcher(std::move(specials));
  if (t->sp_->bos_id() >= 0) t->prefix_.push_back(t->sp_->bos_id());
  return t;
}

Result<std::vector<int32_t>> SpTokenizer::encode(std::string_view text,
                                                 bool add_special_tokens) const {
  TS_RETURN_IF_ERROR(validate_utf8(text));
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_;
  std::vector<Segment> segments;
  specials_.split(text, &segments);
  std::vector<int> chunk;
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    if (s.end == s.begin) continue;
    const auto status = sp_->Encode(text.substr(s.begin, s.end - s.begin), &chunk);
    if (!status.ok()) return internal_error("sentencepiece encode: " + status.ToString());
    ids.insert(ids.end(), chunk.begin(), chunk.end());
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::string SpTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  std::vector<int> run;
  const auto flush = [&] {
    if (run.empty()) return;
    std::string text;
    if (sp_->Decode(run, &text).ok()) out += text;
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (id >= piece_count()) {
      flush();
      const AddedToken& t = appended_[static_cast<size_t>(id - piece_count())];
      if (!skip_special_tokens || !t.special) out += t.content;
    } else if (is_special(id)) {
      flush();
      if (!skip_special_tokens) out += sp_->IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

std::optional<std::string> SpTokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::nullopt;
  if (id >= piece_count()) return appended_[static_cast<size_t>(id - piece_count())].content;
  return sp_->IdToPiece(id);
}

std::optional<int32_t> SpTokenizer::piece_to_id(std::string_view piece) const {
  for (const AddedToken& t : appended_) {
    if (t.content == piece) return t.id;
  }
  const int id = sp_->PieceToId(piece);
  if (id == sp_->unk_id() && piece != sp_->IdToPiece(id)) return std::nullopt;
  return id;
}

int32_t SpTokenizer::piece_count() const { return sp_->GetPieceSize(); }

int32_t SpTokenizer::vocab_size() const {
  return piece_count() + static_cast<int32_t>(appended_.size());
}

bool SpTokenizer::is_special(int32_t id) const {
  if (id >= piece_count() && id < vocab_size()) {
    return appended_[static_cast<size_t>(id - piece_count())].special;
  }
  return id >= 0 && id < sp_->GetPieceSize() && (sp_->IsControl(id) || sp_->IsUnknown(id));
}

Status SpTokenizer::append_tokens(const std::vector<std::string>& texts, bool special) {
  for (const std::string& text : texts) {
    if (text.empty()) return invalid_argument("an appended token is empty");
    AddedToken token;
    token.id = vocab_size();
    token.content = text;
    token.special = special;
    appended_.push_back(token);
    split_out_.push_back(std::move(token));
  }
  specials_ = AddedTokenMatcher(split_out_);
  return Status::ok();
}

void SpTokenizer::set_special_wrapping(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  prefix_ = std::move(prefix);
  suffix_ = std::move(suffix);
}

}  // namespace tierserve::tokenizer

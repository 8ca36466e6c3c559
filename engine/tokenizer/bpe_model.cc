#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

// The byte offset of the first "▁" in `text` after `from` that follows a character other than
// "▁", or npos. (UTF-8 is self-synchronizing: the three bytes before `pos` are a "▁" exactly when
// they spell one.)
size_t next_metaspace_run(std::string_view text, size_t from) {
  for (size_t pos = text.find(kMetaspace, std::max<size_t>(from, 1)); pos != std::string_view::npos;
       pos = text.find(kMetaspace, pos + kMetaspace.size())) {
    if (pos < kMetaspace.size() ||
        text.substr(pos - kMetaspace.size(), kMetaspace.size()) != kMetaspace) {
      return pos;
    }
  }
  return std::string_view::npos;
}

}  // namespace

const std::vector<int32_t>* BpeCache::find(std::string_view word) const {
  auto it = map_.find(word);
  return it == map_.end() ? nullptr : &it->second;
}

void BpeCache::insert(std::string_view word, const int32_t* ids, size_t count) {
  if (word.size() > kMaxWordBytes) return;
  if (map_.size() >= kCapacity) map_.clear();
  map_.emplace(std::string(word), std::vector<int32_t>(ids, ids + count));
}

Result<BpeModel> BpeModel::from_json(const nlohmann::json& model) {
  BpeModel m;
  try {
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null() && model[key] != "") {
        return unimplemented(std::string("BPE model: \"") + key + "\" is not supported");
      }
    }
    if (model.contains("dropout") && !model["dropout"].is_null() &&
        model["dropout"].get<double>() > 0.0) {
      return unimplemented("BPE model: dropout is not supported at inference");
    }
    const auto& vocab = model.at("vocab");
    if (!vocab.is_object()) return data_loss("BPE model: \"vocab\" is not an object");
    for (const auto& [token, id_json] : vocab.items()) {
      const int64_t id = id_json.get<int64_t>();
      if (id < 0 || id > (int64_t{1} << 30)) {
        return data_loss("BPE model: bad id " + std::to_string(id) + " for token " + token);
      }
      m.vocab_.emplace(token, static_cast<int32_t>(id));
      if (static_cast<size_t>(id) >= m.id_to_token_.size()) {
        m.id_to_token_.resize(id + 1);
        m.has_id_.resize(id + 1, false);
      }
      m.id_to_token_[id] = token;
      m.has_id_[id] = true;
    }
    const auto& merges = model.at("merges");
    int32_t rank = 0;
    for (const auto& merge : merges) {
      std::string left, right;
      if (merge.is_string()) {
        const std::string line = merge.get<std::string>();
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return data_loss("BPE model: merge \"" + line + "\" is not two tokens");
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return data_loss("BPE model: merge " + merge.dump() + " is not a pair");
      }
      const auto a = m.vocab_.find(left), b = m.vocab_.find(right), c = m.vocab_.find(left + right);
      if (a == m.vocab_.end() || b == m.vocab_.end() || c == m.vocab_.end()) {
        return data_loss("BPE model: merge \"" + left + " " + right +
                         "\" uses or makes a token missing from the vocab");
      }
      m.merges_.insert(a->second, b->second, Merge{rank++, c->second});
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const auto it = m.vocab_.find(model["unk_token"].get<std::string>());
      if (it != m.vocab_.end()) m.unk_id_ = it->second;
    }
    m.fuse_unk_ = model.value("fuse_unk", false);
    m.byte_fallback_ = model.value("byte_fallback", false);
    m.ignore_merges_ = model.value("ignore_merges", false);
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("BPE model: ") + e.what());
  }
  m.split_at_metaspace_ = m.vocab_.count(std::string_view(kMetaspace)) > 0;
  for (const auto& [token, id] : m.vocab_) {
    if (m.split_at_metaspace_) {
      m.split_at_metaspace_ = next_metaspace_run(token, 0) == std::string_view::npos;
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = m.vocab_.find(std::string_view(name));
    m.byte_fallback_ids_[b] = it == m.vocab_.end() ? -1 : it->second;
  }
  return m;
}

Status BpeModel::enable_byte_level() {
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(byte_to_unicode_utf8(static_cast<uint8_t>(b)));
    if (it == vocab_.end()) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      return data_loss(std::string("byte-level BPE vocab has no token for byte ") + hex);
    }
    byte_ids_[b] = it->second;
  }
  for (const auto& [token, id] : vocab_) {
    if (auto raw = unicode_text_to_bytes(token)) raw_vocab_.emplace(std::move(*raw), id);
  }
  byte_level_ = true;
  return Status::ok();
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::split_chars(std::string_view word, std::vector<Symbol>* symbols) const {
  const auto add = [&](int32_t id) { symbols->push_back(Symbol{id, 0, 0, false}); };
  int32_t pending_unk = -1;  // an unk not yet emitted
  size_t pos = 0;
  while (pos < word.size()) {
    const int len = utf8_sequence_length(static_cast<unsigned char>(word[pos]));
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    if (const auto it = vocab_.find(ch); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        // A pending unk stays pending across byte-fallback pieces, as in tokenizers.
        for (char c : ch) add(byte_fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
}

void BpeModel::merge_all(std::vector<Symbol>* symbols_ptr, std::vector<int32_t>* out) const {
  std::vector<Symbol>& s = *symbols_ptr;
  const int32_t n = static_cast<int32_t>(s.size());
  for (int32_t i = 0; i < n; ++i) {
    s[i].prev = i - 1;
    s[i].next = i + 1 < n ? i + 1 : -1;
  }
  // (rank, pos, new_id); the smallest rank, then the smallest pos, pops first.
  struct Entry {
    int32_t rank, pos, new_id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = merges_.find(s[i].id, s[i + 1].id)) queue.push({m->rank, i, m->new_id});
  }
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Symbol& cur = s[top.pos];
    if (cur.removed || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Merge* m = merges_.find(cur.id, s[next_pos].id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // a stale entry
    cur.id = top.new_id;
    cur.next = s[next_pos].next;
    s[next_pos].removed = true;
    if (cur.next >= 0) s[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = merges_.find(s[cur.prev].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* nm = merges_.find(cur.id, s[cur.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& sym : s) {
    if (!sym.removed) out->push_back(sym.id);
  }
}

void BpeModel::tokenize(std::string_view word, BpeCache* cache, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const TokenMap& map = byte_level_ ? raw_vocab_ : vocab_;
    if (const auto it = map.find(word); it != map.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (split_at_metaspace_ && !byte_level_) {
    size_t begin = 0;
    for (size_t pos = next_metaspace_run(word, 1); pos != std::string_view::npos;
         pos = next_metaspace_run(word, pos + kMetaspace.size())) {
      merge_word(word.substr(begin, pos - begin), cache, out);
      begin = pos;
    }
    merge_word(word.substr(begin), cache, out);
    return;
  }
  merge_word(word, cache, out);
}

void BpeModel::merge_word(std::string_view word, BpeCache* cache, std::vector<int32_t>* out) const {
  if (cache != nullptr) {
    if (const auto* hit = cache->find(word)) {
      out->insert(out->end(), hit->begin(), hit->end());
      return;
    }
  }
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  if (byte_level_) {
    for (char c : word) symbols.push_back(Symbol{byte_ids_[static_cast<uint8_t>(c)], 0, 0, false});
  } else {
    split_chars(word, &symbols);
  }
  const size_t first = out->size();
  merge_all(&symbols, out);
  if (cache != nullptr) cache->insert(word, out->data() + first, out->size() - first);
}

}  // namespace tierserve::tokenizer

#include "engine/detokenizer.h"

#include <algorithm>

#include "common/check.h"

namespace tierserve {
namespace {

// Prompt tokens kept as decode context, as vLLM does: enough for the leading-space rule.
constexpr size_t kContextTokens = 5;

bool ends_with_replacement_char(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  return s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
}

}  // namespace

StreamingDetokenizer::StreamingDetokenizer(DecodeFn decode, const std::vector<int32_t>& prompt,
                                           std::vector<std::string> stop_strings,
                                           bool include_stop_str)
    : decode_(std::move(decode)),
      stop_strings_(std::move(stop_strings)),
      include_stop_str_(include_stop_str) {
  for (const std::string& s : stop_strings_) TS_CHECK(!s.empty()) << "empty stop string";
  const size_t context = std::min(prompt.size(), kContextTokens);
  ids_.assign(prompt.end() - static_cast<std::ptrdiff_t>(context), prompt.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string StreamingDetokenizer::add(int32_t token) {
  if (stopped_) return "";
  ids_.push_back(token);
  const std::string prefix = decode_(ids_, prefix_offset_, read_offset_);
  const std::string full = decode_(ids_, prefix_offset_, ids_.size());
  // As vLLM's incremental detokenization: what the newest tokens add beyond the window's text.
  if (full.size() > prefix.size() && !ends_with_replacement_char(full)) {
    text_.append(full, prefix.size(), std::string::npos);
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
  }
  return release();
}

std::string StreamingDetokenizer::release() {
  // The earliest stop string in the text not yet emitted. A match cannot begin in emitted
  // text: any suffix that could start one was held back.
  size_t stop_at = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& s : stop_strings_) {
    const size_t at = text_.find(s, emitted_);
    if (at < stop_at) {
      stop_at = at;
      matched = &s;
    }
  }
  if (matched != nullptr) {
    matched_stop_ = *matched;
    text_.resize(include_stop_str_ ? stop_at + matched->size() : stop_at);
    stopped_ = true;
    std::string out = text_.substr(emitted_);
    emitted_ = text_.size();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stop_strings_) {
    for (size_t len = std::min(s.size() - 1, text_.size() - emitted_); len > hold; --len) {
      if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  const size_t end = text_.size() - hold;
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string StreamingDetokenizer::finish() {
  if (stopped_) return "";
  // An undecodable tail (partial UTF-8) is emitted as decode gives it.
  if (read_offset_ < ids_.size()) {
    const std::string prefix = decode_(ids_, prefix_offset_, read_offset_);
    const std::string full = decode_(ids_, prefix_offset_, ids_.size());
    if (full.size() > prefix.size()) text_.append(full, prefix.size(), std::string::npos);
    read_offset_ = ids_.size();
  }
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

}  // namespace tierserve

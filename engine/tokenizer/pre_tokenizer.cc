#include "engine/tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>

namespace tierserve::tokenizer {
namespace {

using Ranges = std::vector<std::pair<size_t, size_t>>;

constexpr const char* kSpaceReplacement = "\xE2\x96\x81";  // U+2581 '▁'

// Splits `ranges` of `text` around each occurrence of `delim`: Isolated keeps the delimiter as
// its own piece, MergedWithNext glues it to the following piece.
Ranges split_literal(const std::string& text, const Ranges& ranges, const std::string& delim,
                     bool merged_with_next) {
  Ranges out;
  for (const auto& [begin, end] : ranges) {
    size_t piece = begin;
    for (size_t pos = begin; pos < end;) {
      const size_t hit = text.find(delim, pos);
      if (hit == std::string::npos || hit + delim.size() > end) break;
      if (merged_with_next) {
        if (hit > piece) out.emplace_back(piece, hit);
        piece = hit;
      } else {
        if (hit > piece) out.emplace_back(piece, hit);
        out.emplace_back(hit, hit + delim.size());
        piece = hit + delim.size();
      }
      pos = hit + delim.size();
    }
    if (end > piece) out.emplace_back(piece, end);
  }
  return out;
}

}  // namespace

Status PreTokenizer::parse(const nlohmann::json& j, std::vector<Step>* steps) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& inner : j.at("pretokenizers")) TS_RETURN_IF_ERROR(parse(inner, steps));
    return Status::ok();
  }
  Step step{};
  if (type == "Split") {
    const std::string behavior = j.value("behavior", "Isolated");
    if (behavior != "Isolated" || j.value("invert", false)) {
      return unimplemented("pre-tokenizer Split with behavior \"" + behavior +
                           "\" / invert (only Isolated is supported)");
    }
    const auto& pattern = j.at("pattern");
    if (pattern.contains("Regex")) {
      const std::string regex = pattern["Regex"].get<std::string>();
      const auto known = find_split_pattern(regex);
      if (!known) {
        return unimplemented(
            "pre-tokenizer Split regex is not one of the supported patterns "
            "(GPT-2, Llama 3, Qwen2): " +
            regex);
      }
      step.kind = Kind::kSplitRegex;
      step.pattern = *known;
    } else {
      step.kind = Kind::kSplitString;
      step.literal = pattern.at("String").get<std::string>();
    }
  } else if (type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
    step.add_prefix_space = j.value("add_prefix_space", false);
    step.use_regex = j.value("use_regex", true);
    step.pattern = gpt2_split_pattern();
  } else if (type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    step.literal = j.value("replacement", std::string(kSpaceReplacement));
    step.split = j.value("split", true);
    if (j.contains("prepend_scheme")) {
      const std::string scheme = j["prepend_scheme"].get<std::string>();
      step.prepend_scheme = scheme == "always" ? 2 : scheme == "first" ? 1 : 0;
    } else {
      step.prepend_scheme = j.value("add_prefix_space", true) ? 2 : 0;
    }
  } else {
    return unimplemented("pre-tokenizer type \"" + type + "\" is not supported");
  }
  steps->push_back(std::move(step));
  return Status::ok();
}

Result<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& pre_tokenizer) {
  PreTokenizer p;
  if (pre_tokenizer.is_null()) return p;
  try {
    TS_RETURN_IF_ERROR(parse(pre_tokenizer, &p.steps_));
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("pre_tokenizer: ") + e.what());
  }
  for (size_t i = 0; i + 1 < p.steps_.size(); ++i) {
    if (p.steps_[i].kind == Kind::kByteLevel) {
      return unimplemented("pre-tokenizer: ByteLevel must be the last step");
    }
  }
  return p;
}

void PreTokenizer::apply(const Step& step, PreTokens* t, bool at_start) const {
  switch (step.kind) {
    case Kind::kSplitRegex: {
      Ranges out;
      out.reserve(t->ranges.size() * 2);
      for (const auto& [begin, end] : t->ranges) {
        const size_t first = out.size();
        scan_split_pattern(step.pattern, std::string_view(t->text).substr(begin, end - begin),
                           &out);
        for (size_t i = first; i < out.size(); ++i) {
          out[i].first += begin;
          out[i].second += begin;
        }
      }
      t->ranges = std::move(out);
      break;
    }
    case Kind::kSplitString:
      t->ranges = split_literal(t->text, t->ranges, step.literal, /*merged_with_next=*/false);
      break;
    case Kind::kByteLevel: {
      if (step.add_prefix_space) {
        // Every piece that does not start with a space gets one, as in tokenizers.
        std::string text;
        Ranges ranges;
        for (const auto& [begin, end] : t->ranges) {
          const size_t start = text.size();
          if (t->text[begin] != ' ') text.push_back(' ');
          text.append(t->text, begin, end - begin);
          ranges.emplace_back(start, text.size());
        }
        t->text = std::move(text);
        t->ranges = std::move(ranges);
      }
      if (step.use_regex) {
        Step split = step;
        split.kind = Kind::kSplitRegex;
        apply(split, t, at_start);
      }
      break;
    }
    case Kind::kMetaspace: {
      std::string text;
      Ranges ranges;
      for (const auto& [begin, end] : t->ranges) {
        const size_t start = text.size();
        std::string piece = t->text.substr(begin, end - begin);
        const bool starts =
            piece.compare(0, step.literal.size(), step.literal) == 0 || piece[0] == ' ';
        const bool first = at_start && begin == 0;
        if (!starts && (step.prepend_scheme == 2 || (step.prepend_scheme == 1 && first))) {
          text += step.literal;
        }
        for (char c : piece) {
          if (c == ' ') {
            text += step.literal;
          } else {
            text.push_back(c);
          }
        }
        ranges.emplace_back(start, text.size());
      }
      t->text = std::move(text);
      t->ranges = step.split
                      ? split_literal(t->text, ranges, step.literal, /*merged_with_next=*/true)
                      : std::move(ranges);
      break;
    }
  }
}

void PreTokenizer::pre_tokenize(PreTokens* out, bool at_start) const {
  out->ranges.clear();
  if (out->text.empty()) return;
  out->ranges.emplace_back(0, out->text.size());
  for (const Step& step : steps_) apply(step, out, at_start);
}

}  // namespace tierserve::tokenizer

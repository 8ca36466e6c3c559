#include "engine/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "engine/tokenizer/unicode_class.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

const icu::Normalizer2* icu_normalizer(bool compose, bool compat) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = compat ? (compose ? icu::Normalizer2::getNFKCInstance(err)
                                                : icu::Normalizer2::getNFKDInstance(err))
                                     : (compose ? icu::Normalizer2::getNFCInstance(err)
                                                : icu::Normalizer2::getNFDInstance(err));
  TS_CHECK(U_SUCCESS(err)) << "ICU normalizer data is missing: " << u_errorName(err);
  return n;
}

void icu_normalize(const icu::Normalizer2* n, std::string* text) {
  if (is_ascii(*text)) return;  // ASCII is invariant under all four forms
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text->size()));
  UErrorCode err = U_ZERO_ERROR;
  n->normalizeUTF8(0, icu::StringPiece(text->data(), static_cast<int32_t>(text->size())), sink,
                   nullptr, err);
  TS_CHECK(U_SUCCESS(err)) << "ICU normalization of valid UTF-8 failed: " << u_errorName(err);
  *text = std::move(out);
}

}  // namespace

Status Normalizer::parse(const nlohmann::json& j, std::vector<Step>* steps) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& inner : j.at("normalizers")) TS_RETURN_IF_ERROR(parse(inner, steps));
  } else if (type == "NFC") {
    steps->push_back({Kind::kNfc, "", ""});
  } else if (type == "NFD") {
    steps->push_back({Kind::kNfd, "", ""});
  } else if (type == "NFKC") {
    steps->push_back({Kind::kNfkc, "", ""});
  } else if (type == "NFKD") {
    steps->push_back({Kind::kNfkd, "", ""});
  } else if (type == "Lowercase") {
    steps->push_back({Kind::kLowercase, "", ""});
  } else if (type == "Prepend") {
    steps->push_back({Kind::kPrepend, j.at("prepend").get<std::string>(), ""});
  } else if (type == "Replace") {
    const auto& pattern = j.at("pattern");
    if (!pattern.contains("String")) {
      return unimplemented("normalizer Replace with pattern " + pattern.dump() +
                           " (only literal \"String\" patterns are supported)");
    }
    steps->push_back(
        {Kind::kReplace, pattern["String"].get<std::string>(), j.at("content").get<std::string>()});
  } else if (type == "Strip") {
    Step s{Kind::kStrip, "", ""};
    s.left = j.value("strip_left", false);
    s.right = j.value("strip_right", false);
    steps->push_back(s);
  } else {
    return unimplemented("normalizer type \"" + type + "\" is not supported");
  }
  return Status::ok();
}

Result<Normalizer> Normalizer::from_json(const nlohmann::json& normalizer) {
  Normalizer n;
  if (normalizer.is_null()) return n;
  try {
    TS_RETURN_IF_ERROR(parse(normalizer, &n.steps_));
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("normalizer: ") + e.what());
  }
  return n;
}

void Normalizer::normalize(std::string* text) const {
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kNfc:
        icu_normalize(icu_normalizer(true, false), text);
        break;
      case Kind::kNfd:
        icu_normalize(icu_normalizer(false, false), text);
        break;
      case Kind::kNfkc:
        icu_normalize(icu_normalizer(true, true), text);
        break;
      case Kind::kNfkd:
        icu_normalize(icu_normalizer(false, true), text);
        break;
      case Kind::kLowercase: {
        std::string out;
        icu::StringByteSink<std::string> sink(&out);
        UErrorCode err = U_ZERO_ERROR;
        icu::CaseMap::utf8ToLower(
            "", 0, icu::StringPiece(text->data(), static_cast<int32_t>(text->size())), sink,
            nullptr, err);
        TS_CHECK(U_SUCCESS(err)) << "ICU lowercase failed: " << u_errorName(err);
        *text = std::move(out);
        break;
      }
      case Kind::kPrepend:
        if (!text->empty()) text->insert(0, step.a);
        break;
      case Kind::kReplace:
        replace_all(text, step.a, step.b);
        break;
      case Kind::kStrip: {
        size_t begin = 0, end = text->size();
        int len;
        while (step.left && begin < end &&
               (char_class(decode_utf8(*text, begin, &len)) & kClassSpace)) {
          begin += len;
        }
        while (step.right && end > begin) {
          size_t last = end - 1;
          while (((*text)[last] & 0xC0) == 0x80) --last;
          if (!(char_class(decode_utf8(*text, last, &len)) & kClassSpace)) break;
          end = last;
        }
        *text = text->substr(begin, end - begin);
        break;
      }
    }
  }
}

}  // namespace tierserve::tokenizer

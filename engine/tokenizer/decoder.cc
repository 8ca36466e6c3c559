#include "engine/tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve::tokenizer {
namespace {

// The byte of a "<0xNN>" token, or -1.
int fallback_byte(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

// Splits valid UTF-8 into code points.
std::vector<std::string_view> chars_of(const std::string& s) {
  std::vector<std::string_view> out;
  for (size_t p = 0; p < s.size();) {
    const int len = utf8_sequence_length(static_cast<unsigned char>(s[p]));
    out.push_back(std::string_view(s).substr(p, len));
    p += len;
  }
  return out;
}

}  // namespace

Status Decoder::parse(const nlohmann::json& j, std::vector<Step>* steps) {
  const std::string type = j.at("type").get<std::string>();
  Step s{};
  if (type == "Sequence") {
    for (const auto& inner : j.at("decoders")) TS_RETURN_IF_ERROR(parse(inner, steps));
    return Status::ok();
  } else if (type == "ByteLevel") {
    s.kind = Kind::kByteLevel;
  } else if (type == "Replace") {
    const auto& pattern = j.at("pattern");
    if (!pattern.contains("String")) {
      return unimplemented("decoder Replace with a regex pattern is not supported");
    }
    s.kind = Kind::kReplace;
    s.a = pattern["String"].get<std::string>();
    s.b = j.at("content").get<std::string>();
  } else if (type == "ByteFallback") {
    s.kind = Kind::kByteFallback;
  } else if (type == "Fuse") {
    s.kind = Kind::kFuse;
  } else if (type == "Strip") {
    s.kind = Kind::kStrip;
    s.a = j.at("content").get<std::string>();
    s.start = j.value("start", 0);
    s.stop = j.value("stop", 0);
  } else if (type == "Metaspace") {
    s.kind = Kind::kMetaspace;
    s.a = j.value("replacement", std::string("\xE2\x96\x81"));
    s.strip_first = j.contains("prepend_scheme") ? j["prepend_scheme"] != "never"
                                                 : j.value("add_prefix_space", true);
  } else {
    return unimplemented("decoder type \"" + type + "\" is not supported");
  }
  steps->push_back(std::move(s));
  return Status::ok();
}

Result<Decoder> Decoder::from_json(const nlohmann::json& decoder) {
  Decoder d;
  if (decoder.is_null()) return d;
  d.present_ = true;
  try {
    TS_RETURN_IF_ERROR(parse(decoder, &d.steps_));
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("decoder: ") + e.what());
  }
  return d;
}

std::string Decoder::decode(std::vector<std::string> tokens) const {
  if (!present_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) {
          auto raw = unicode_text_to_bytes(t);
          bytes += raw ? *raw : t;
        }
        tokens.assign(1, utf8_lossy(bytes));
        break;
      }
      case Kind::kReplace:
        for (std::string& t : tokens) replace_all(&t, step.a, step.b);
        break;
      case Kind::kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        const auto flush = [&] {
          if (pending.empty()) return;
          if (validate_utf8(pending).is_ok()) {
            out.push_back(pending);
          } else {
            for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (std::string& t : tokens) {
          const int b = fallback_byte(t);
          if (b >= 0) {
            pending.push_back(static_cast<char>(b));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case Kind::kStrip:
        for (std::string& t : tokens) {
          const auto chars = chars_of(t);
          size_t begin = 0, end = chars.size();
          while (begin < static_cast<size_t>(step.start) && begin < end && chars[begin] == step.a) {
            ++begin;
          }
          for (int k = 0; k < step.stop && end > begin && chars[end - 1] == step.a; ++k) --end;
          std::string s;
          for (size_t i = begin; i < end; ++i) s += chars[i];
          t = std::move(s);
        }
        break;
      case Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          replace_all(&tokens[i], step.a, i == 0 && step.strip_first ? "" : " ");
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace tierserve::tokenizer

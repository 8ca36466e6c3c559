#include "engine/tokenizer/post_processor.h"

#include <nlohmann/json.hpp>

namespace tierserve::tokenizer {

Status PostProcessor::parse(const nlohmann::json& j, PostProcessor* p) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& inner : j.at("processors")) TS_RETURN_IF_ERROR(parse(inner, p));
  } else if (type == "ByteLevel") {
    // Only adjusts offsets.
  } else if (type == "TemplateProcessing") {
    std::vector<int32_t> prefix, suffix;
    bool seen_sequence = false;
    for (const auto& piece : j.at("single")) {
      if (piece.contains("Sequence")) {
        if (piece["Sequence"].at("id") != "A") {
          return data_loss("TemplateProcessing: the single template may only use sequence A");
        }
        seen_sequence = true;
        continue;
      }
      const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
      const auto& special = j.at("special_tokens");
      if (!special.contains(name)) {
        return data_loss("TemplateProcessing: special token \"" + name + "\" is not defined");
      }
      auto& dst = seen_sequence ? suffix : prefix;
      for (const auto& id : special[name].at("ids")) dst.push_back(id.get<int32_t>());
    }
    p->prefix_.insert(p->prefix_.begin(), prefix.begin(), prefix.end());
    p->suffix_.insert(p->suffix_.end(), suffix.begin(), suffix.end());
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    p->prefix_.insert(p->prefix_.begin(), j.at("cls").at(1).get<int32_t>());
    p->suffix_.push_back(j.at("sep").at(1).get<int32_t>());
  } else {
    return unimplemented("post-processor type \"" + type + "\" is not supported");
  }
  return Status::ok();
}

Result<PostProcessor> PostProcessor::from_json(const nlohmann::json& post_processor) {
  PostProcessor p;
  if (post_processor.is_null()) return p;
  try {
    TS_RETURN_IF_ERROR(parse(post_processor, &p));
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("post_processor: ") + e.what());
  }
  return p;
}

void PostProcessor::process(std::vector<int32_t>* ids) const {
  ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
  ids->insert(ids->end(), suffix_.begin(), suffix_.end());
}

}  // namespace tierserve::tokenizer

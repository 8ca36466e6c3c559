#include "bench/stream_recorder.h"

#include <nlohmann/json.hpp>

namespace tierserve::bench {

using Json = nlohmann::json;

void StreamRecorder::feed(std::string_view bytes, double t) {
  pending_.append(bytes);
  size_t start = 0;
  for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(pending_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {  // the end of an event
      if (!data_.empty()) event(data_, t);
      data_.clear();
    } else if (line.rfind("data:", 0) == 0) {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (!data_.empty()) data_ += '\n';
      data_.append(line);
    }  // comments (":") and other fields are ignored
  }
  pending_.erase(0, start);
}

void StreamRecorder::event(std::string_view data, double t) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  const Json j = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    if (error_.empty()) error_ = "an event that is not a JSON object: " + std::string(data, 0, 200);
    return;
  }
  if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
    if (error_.empty()) {
      error_ = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                   ? (*e)["message"].get<std::string>()
                   : e->dump();
    }
    return;
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (auto c = u->find("completion_tokens"); c != u->end() && c->is_number_integer()) {
      completion_tokens_ = c->get<int64_t>();
    }
    if (auto p = u->find("prompt_tokens"); p != u->end() && p->is_number_integer()) {
      prompt_tokens_ = p->get<int64_t>();
    }
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array()) return;
  std::string content;
  for (const Json& c : *choices) {
    if (!c.is_object()) continue;
    if (auto d = c.find("delta"); d != c.end() && d->is_object()) {
      if (auto s = d->find("content"); s != d->end() && s->is_string())
        content += s->get<std::string>();
    } else if (auto s = c.find("text"); s != c.end() && s->is_string()) {
      content += s->get<std::string>();
    }
  }
  if (content.empty()) return;
  if (!first_s_.has_value()) {
    first_s_ = t;
  } else {
    itl_s_.push_back(t - last_s_);
  }
  last_s_ = t;
  ++content_chunks_;
  text_ += content;
}

void StreamRecorder::finish(double end_s, int64_t dataset_prompt_tokens, RequestRecord* r) const {
  r->latency_s = end_s;
  r->generated_text = text_;
  r->prompt_tokens = prompt_tokens_.value_or(dataset_prompt_tokens);
  r->output_tokens = completion_tokens_.value_or(content_chunks_);
  r->itl_s = itl_s_;
  r->ttft_s = first_s_.value_or(0);
  r->success = false;
  r->error_class = "stream";
  if (!error_.empty()) {
    r->error = "error event: " + error_;
  } else if (!done_) {
    r->error = "the stream ended without data: [DONE]";
  } else if (!first_s_.has_value()) {
    r->error = "the stream carried no content";
  } else {
    r->success = true;
    r->error_class.clear();
  }
}

}  // namespace tierserve::bench

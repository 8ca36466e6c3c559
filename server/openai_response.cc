#include "server/openai_response.h"

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

namespace tierserve {
namespace {

using Json = nlohmann::ordered_json;

// Output text comes from a detokenizer that never emits invalid UTF-8, but a replacement
// character is better than an exception if it ever did.
std::string dump(const Json& json) {
  return json.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

std::string random_hex(size_t digits) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(digits, '0');
  uint64_t bits = 0;
  for (size_t i = 0; i < digits; ++i) {
    if (i % 16 == 0) bits = rng();
    out[i] = kHex[bits & 0xf];
    bits >>= 4;
  }
  return out;
}

// JSON has no -inf; vLLM sends -9999.0 for it.
double clamp_logprob(float logprob) {
  if (std::isnan(logprob)) return -9999.0;
  return std::max(static_cast<double>(logprob), -9999.0);
}

Json utf8_bytes(const std::string& text) {
  Json bytes = Json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

Json usage_json(const Usage& usage) {
  Json u = Json::object();
  u["prompt_tokens"] = usage.prompt_tokens;
  u["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  u["completion_tokens"] = usage.completion_tokens;
  if (usage.cached_tokens) {
    u["prompt_tokens_details"] = {{"cached_tokens", *usage.cached_tokens}};
  } else {
    u["prompt_tokens_details"] = nullptr;
  }
  return u;
}

Json stop_reason_json(const StopReason& reason) {
  if (reason.text) return *reason.text;
  if (reason.token_id) return *reason.token_id;
  return nullptr;
}

Json finish_reason_json(const std::string& reason) {
  if (reason.empty()) return nullptr;
  return reason;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
Json chat_logprobs_json(const std::optional<std::vector<TokenLogprob>>& logprobs) {
  if (!logprobs) return nullptr;
  Json content = Json::array();
  for (const TokenLogprob& t : *logprobs) {
    Json top = Json::array();
    for (const auto& [token, logprob] : t.top) {
      top.push_back(Json{
          {"token", token}, {"logprob", clamp_logprob(logprob)}, {"bytes", utf8_bytes(token)}});
    }
    content.push_back(Json{{"token", t.token},
                           {"logprob", clamp_logprob(t.logprob)},
                           {"bytes", utf8_bytes(t.token)},
                           {"top_logprobs", std::move(top)}});
  }
  return Json{{"content", std::move(content)}};
}

// Completions: {"text_offset", "token_logprobs", "tokens", "top_logprobs"}; each top_logprobs
// entry maps the sampled token and its alternatives to their logprobs. Offsets count code points
// from `text_offset`.
Json completion_logprobs_json(const std::optional<std::vector<TokenLogprob>>& logprobs,
                              int64_t text_offset) {
  if (!logprobs) return nullptr;
  Json offsets = Json::array(), values = Json::array(), tokens = Json::array(),
       tops = Json::array();
  for (const TokenLogprob& t : *logprobs) {
    offsets.push_back(text_offset);
    text_offset += code_points(t.token);
    values.push_back(clamp_logprob(t.logprob));
    tokens.push_back(t.token);
    Json top = Json::object();
    top[t.token] = clamp_logprob(t.logprob);
    for (const auto& [token, logprob] : t.top) {
      if (!top.contains(token)) top[token] = clamp_logprob(logprob);
    }
    tops.push_back(std::move(top));
  }
  return Json{{"text_offset", std::move(offsets)},
              {"token_logprobs", std::move(values)},
              {"tokens", std::move(tokens)},
              {"top_logprobs", std::move(tops)}};
}

Json header(const ResponseMeta& meta, const char* object) {
  Json j = Json::object();
  j["id"] = meta.id;
  j["object"] = object;
  j["created"] = meta.created;
  j["model"] = meta.model;
  return j;
}

Json error_object(const ApiError& error) {
  Json e = Json::object();
  e["message"] = error.message;
  e["type"] = error.type;
  if (error.param.empty()) {
    e["param"] = nullptr;
  } else {
    e["param"] = error.param;
  }
  e["code"] = error.http_status;
  return Json{{"error", std::move(e)}};
}

}  // namespace

int64_t code_points(std::string_view text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

std::string make_completion_id() { return "cmpl-" + random_hex(32); }
std::string make_chat_completion_id() { return "chatcmpl-" + random_hex(32); }

int64_t unix_seconds_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string completion_response_json(const ResponseMeta& meta,
                                     const std::vector<ChoiceOutput>& choices, const Usage& usage,
                                     bool return_token_ids) {
  Json j = header(meta, "text_completion");
  Json out = Json::array();
  for (const ChoiceOutput& c : choices) {
    Json choice = Json::object();
    choice["index"] = c.index;
    choice["text"] = c.text;
    choice["logprobs"] = completion_logprobs_json(c.logprobs, c.text_offset);
    choice["finish_reason"] = finish_reason_json(c.finish_reason);
    choice["stop_reason"] = stop_reason_json(c.stop_reason);
    if (return_token_ids) {
      choice["prompt_token_ids"] = c.prompt_token_ids;
      choice["token_ids"] = c.token_ids;
    }
    out.push_back(std::move(choice));
  }
  j["choices"] = std::move(out);
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string chat_completion_response_json(const ResponseMeta& meta,
                                          const std::vector<ChoiceOutput>& choices,
                                          const Usage& usage,
                                          const std::vector<int32_t>* prompt_token_ids) {
  Json j = header(meta, "chat.completion");
  Json out = Json::array();
  for (const ChoiceOutput& c : choices) {
    Json choice = Json::object();
    choice["index"] = c.index;
    choice["message"] = Json{{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
    choice["logprobs"] = chat_logprobs_json(c.logprobs);
    choice["finish_reason"] = finish_reason_json(c.finish_reason);
    choice["stop_reason"] = stop_reason_json(c.stop_reason);
    if (prompt_token_ids) choice["token_ids"] = c.token_ids;
    out.push_back(std::move(choice));
  }
  j["choices"] = std::move(out);
  j["usage"] = usage_json(usage);
  if (prompt_token_ids) j["prompt_token_ids"] = *prompt_token_ids;
  return dump(j);
}

std::string sse_event(std::string_view json) {
  std::string event;
  event.reserve(json.size() + 8);
  event += "data: ";
  event += json;
  event += "\n\n";
  return event;
}

std::string sse_done() { return "data: [DONE]\n\n"; }

std::string chat_role_chunk(const ResponseMeta& meta, int32_t index,
                            const std::vector<int32_t>* prompt_token_ids) {
  Json j = header(meta, "chat.completion.chunk");
  Json choice = Json::object();
  choice["index"] = index;
  choice["delta"] = Json{{"role", "assistant"}, {"content", ""}};
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = nullptr;
  j["choices"] = Json::array({std::move(choice)});
  if (prompt_token_ids) j["prompt_token_ids"] = *prompt_token_ids;
  return sse_event(dump(j));
}

std::string chat_delta_chunk(const ResponseMeta& meta, const StreamDelta& delta,
                             bool return_token_ids) {
  Json j = header(meta, "chat.completion.chunk");
  Json choice = Json::object();
  choice["index"] = delta.index;
  const bool final_chunk = !delta.finish_reason.empty();
  if (final_chunk && delta.text.empty()) {
    choice["delta"] = Json::object();
  } else {
    choice["delta"] = Json{{"content", delta.text}};
  }
  choice["logprobs"] = chat_logprobs_json(delta.logprobs);
  choice["finish_reason"] = finish_reason_json(delta.finish_reason);
  if (final_chunk) choice["stop_reason"] = stop_reason_json(delta.stop_reason);
  if (return_token_ids) choice["token_ids"] = delta.token_ids;
  j["choices"] = Json::array({std::move(choice)});
  return sse_event(dump(j));
}

std::string completion_delta_chunk(const ResponseMeta& meta, const StreamDelta& delta,
                                   bool return_token_ids,
                                   const std::vector<int32_t>* prompt_token_ids) {
  Json j = header(meta, "text_completion");
  Json choice = Json::object();
  choice["index"] = delta.index;
  choice["text"] = delta.text;
  choice["logprobs"] = completion_logprobs_json(delta.logprobs, delta.text_offset);
  choice["finish_reason"] = finish_reason_json(delta.finish_reason);
  choice["stop_reason"] = stop_reason_json(delta.stop_reason);
  if (return_token_ids) {
    if (prompt_token_ids) choice["prompt_token_ids"] = *prompt_token_ids;
    choice["token_ids"] = delta.token_ids;
  }
  j["choices"] = Json::array({std::move(choice)});
  return sse_event(dump(j));
}

std::string usage_chunk(const ResponseMeta& meta, const Usage& usage, bool chat) {
  Json j = header(meta, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = Json::array();
  j["usage"] = usage_json(usage);
  return sse_event(dump(j));
}

std::string error_json(const ApiError& error) { return dump(error_object(error)); }

std::string sse_error_event(const ApiError& error) { return sse_event(error_json(error)); }

std::string models_json(const std::vector<ModelCard>& models) {
  Json data = Json::array();
  for (const ModelCard& m : models) {
    Json card = Json::object();
    card["id"] = m.id;
    card["object"] = "model";
    card["created"] = m.created;
    card["owned_by"] = m.owned_by;
    card["root"] = m.root;
    card["parent"] = nullptr;
    card["max_model_len"] = m.max_model_len;
    // vLLM's one ModelPermission object.
    card["permission"] = Json::array({Json{{"id", "modelperm-" + random_hex(32)},
                                           {"object", "model_permission"},
                                           {"created", m.created},
                                           {"allow_create_engine", false},
                                           {"allow_sampling", true},
                                           {"allow_logprobs", true},
                                           {"allow_search_indices", false},
                                           {"allow_view", true},
                                           {"allow_fine_tuning", false},
                                           {"organization", "*"},
                                           {"group", nullptr},
                                           {"is_blocking", false}}});
    data.push_back(std::move(card));
  }
  return dump(Json{{"object", "list"}, {"data", std::move(data)}});
}

std::string version_json(std::string_view version) {
  return dump(Json{{"version", std::string(version)}});
}

std::string tokenize_response_json(const std::vector<int32_t>& tokens, int32_t max_model_len,
                                   const std::vector<std::string>* token_strs) {
  Json j = Json::object();
  j["count"] = tokens.size();
  j["max_model_len"] = max_model_len;
  j["tokens"] = tokens;
  if (token_strs) {
    j["token_strs"] = *token_strs;
  } else {
    j["token_strs"] = nullptr;
  }
  return dump(j);
}

std::string detokenize_response_json(std::string_view text) {
  return dump(Json{{"prompt", std::string(text)}, {"content", std::string(text)}});
}

}  // namespace tierserve

#include "server/openai_request.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace tierserve {
namespace {

using Json = nlohmann::ordered_json;

constexpr int32_t kMaxLogprobs = 20;              // vLLM's default --max-logprobs
constexpr int32_t kMaxN = 128;                    // SamplingParams::validate's bound
constexpr int32_t kDefaultCompletionTokens = 16;  // OpenAI's default for /v1/completions

std::string type_name(const Json& value) {
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  if (value.is_string()) return "a string";
  if (value.is_array()) return "a list";
  if (value.is_object()) return "an object";
  return "null";
}

// Reads typed fields of a request object. A field that is absent or null reads as nullopt; a
// field of the wrong type or range records an error (the first one is kept) and reads as
// nullopt, so a parser reads every field and checks error() once.
class FieldReader {
 public:
  explicit FieldReader(const Json& object) : object_(object) {}

  const std::optional<ApiError>& error() const { return error_; }
  void fail(std::string message, std::string param) {
    if (!error_) error_ = bad_request_error(std::move(message), std::move(param));
  }

  // The field's value, or nullptr when absent or null.
  const Json* find(const std::string& name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  std::optional<bool> boolean(const std::string& name) {
    const Json* v = find(name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) return wrong_type(name, "a boolean", *v), std::nullopt;
    return v->get<bool>();
  }

  std::optional<std::string> string(const std::string& name) {
    const Json* v = find(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) return wrong_type(name, "a string", *v), std::nullopt;
    return v->get<std::string>();
  }

  // A finite number, in [min, max].
  std::optional<double> number(const std::string& name, double min, double max, const char* range) {
    const Json* v = find(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) return wrong_type(name, "a number", *v), std::nullopt;
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < min || x > max) {
      fail(name + " must be " + range + ", got " + v->dump(), name);
      return std::nullopt;
    }
    return x;
  }

  // An integer (or an integral float) in [min, max].
  std::optional<int64_t> integer(const std::string& name, int64_t min, int64_t max,
                                 const char* range) {
    const Json* v = find(name);
    if (!v) return std::nullopt;
    std::optional<int64_t> x = as_integer(*v);
    if (!x) return wrong_type(name, "an integer", *v), std::nullopt;
    if (*x < min || *x > max) {
      fail(name + " must be " + range + ", got " + v->dump(), name);
      return std::nullopt;
    }
    return x;
  }

  // A list of token ids (integers in [0, 2^31)); `allow_empty` or not.
  std::optional<std::vector<int32_t>> token_ids(const std::string& name, bool allow_empty) {
    const Json* v = find(name);
    if (!v) return std::nullopt;
    if (!v->is_array()) return wrong_type(name, "a list of integers", *v), std::nullopt;
    if (!allow_empty && v->empty()) {
      fail(name + " must not be empty", name);
      return std::nullopt;
    }
    return ids_of(*v, name);
  }

  // The ids of `list`, each an integer in [0, 2^31).
  std::optional<std::vector<int32_t>> ids_of(const Json& list, const std::string& param) {
    std::vector<int32_t> ids;
    ids.reserve(list.size());
    for (const Json& item : list) {
      std::optional<int64_t> id = as_integer(item);
      if (!id || *id < 0 || *id > std::numeric_limits<int32_t>::max()) {
        fail(param + " must hold token ids (integers >= 0), got " + item.dump(), param);
        return std::nullopt;
      }
      ids.push_back(static_cast<int32_t>(*id));
    }
    return ids;
  }

  static std::optional<int64_t> as_integer(const Json& v) {
    if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(u);
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      // 2^63 is exactly representable; anything at or beyond it does not fit.
      if (!std::isfinite(d) || d != std::floor(d) || d < -9.2233720368547758e18 ||
          d >= 9.2233720368547758e18) {
        return std::nullopt;
      }
      return static_cast<int64_t>(d);
    }
    return std::nullopt;
  }

 private:
  void wrong_type(const std::string& name, const char* expected, const Json& got) {
    fail(name + " must be " + expected + ", got " + type_name(got), name);
  }

  const Json& object_;
  std::optional<ApiError> error_;
};

// Parses `body` as a JSON object.
ApiResult<Json> parse_body(std::string_view body) {
  Json parsed = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return bad_request_error("the request body is not valid JSON");
  if (!parsed.is_object()) {
    return bad_request_error("the request body must be a JSON object, got " + type_name(parsed));
  }
  return parsed;
}

// The `model` field checked against the served names.
std::optional<std::string> read_model(FieldReader& r, const RequestDefaults& defaults,
                                      std::optional<ApiError>* not_found) {
  std::optional<std::string> model = r.string("model");
  if (r.error()) return std::nullopt;
  const auto& names = defaults.served_model_names;
  if (!model) return names.empty() ? std::string() : names.front();
  if (!names.empty() && std::find(names.begin(), names.end(), *model) == names.end()) {
    *not_found = model_not_found_error(*model);
    return std::nullopt;
  }
  return model;
}

// messages: a non-empty list of {"role": string, "content": string | null | [parts]} objects.
// Text parts are joined by "\n" (vLLM's "string" content format); other parts are refused.
std::optional<std::string> read_messages(FieldReader& r) {
  const Json* messages = r.find("messages");
  if (!messages) {
    r.fail("messages is required", "messages");
    return std::nullopt;
  }
  if (!messages->is_array() || messages->empty()) {
    r.fail("messages must be a non-empty list of message objects", "messages");
    return std::nullopt;
  }
  Json normalized = Json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      r.fail(where + " must be an object, got " + type_name(m), "messages");
      return std::nullopt;
    }
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      r.fail(where + ".role must be a string", "messages");
      return std::nullopt;
    }
    Json out = m;
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (size_t j = 0; j < content->size(); ++j) {
        const Json& part = (*content)[j];
        const Json* part_text = nullptr;
        if (part.is_object()) {
          auto type = part.find("type");
          const bool is_text = type == part.end() || (type->is_string() && *type == "text");
          auto t = part.find("text");
          if (is_text && t != part.end() && t->is_string()) part_text = &*t;
        } else if (part.is_string()) {
          part_text = &part;
        }
        if (!part_text) {
          r.fail(where + ".content[" + std::to_string(j) +
                     "]: only text content parts ({\"type\": \"text\", \"text\": ...}) are "
                     "supported",
                 "messages");
          return std::nullopt;
        }
        if (j > 0) text += '\n';
        text += part_text->get<std::string>();
      }
      out["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      r.fail(where + ".content must be a string, a list of parts or null", "messages");
      return std::nullopt;
    }
    normalized.push_back(std::move(out));
  }
  return normalized.dump();
}

// chat_template_kwargs: an object (or absent/null = {}).
std::string read_template_kwargs(FieldReader& r) {
  const Json* kwargs = r.find("chat_template_kwargs");
  if (!kwargs) return "{}";
  if (!kwargs->is_object()) {
    r.fail("chat_template_kwargs must be an object, got " + type_name(*kwargs),
           "chat_template_kwargs");
    return "{}";
  }
  return kwargs->dump();
}

// add_generation_prompt (default true), continue_final_message (default false; not with the
// former, as vLLM) and chat_template_kwargs.
ChatPromptOptions read_template_options(FieldReader& r) {
  ChatPromptOptions o;
  o.add_generation_prompt = r.boolean("add_generation_prompt").value_or(true);
  o.continue_final_message = r.boolean("continue_final_message").value_or(false);
  if (o.add_generation_prompt && o.continue_final_message) {
    r.fail("Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
           "continue_final_message");
  }
  o.chat_template_kwargs_json = read_template_kwargs(r);
  return o;
}

// The fields common to completions and chat. `chat` selects the fields whose meaning differs:
// logprobs (an integer for completions, a boolean plus top_logprobs for chat) and the default of
// add_special_tokens.
std::optional<GenerationOptions> read_generation_options(FieldReader& r, const Json& body,
                                                         const RequestDefaults& defaults, bool chat,
                                                         std::optional<ApiError>* not_found) {
  GenerationOptions o;
  o.is_chat = chat;
  std::optional<std::string> model = read_model(r, defaults, not_found);
  if (*not_found) return std::nullopt;
  if (model) o.model = std::move(*model);

  SamplingParams& p = o.params;
  SamplingFieldsGiven& g = o.given;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (auto v = r.number("temperature", 0, kInf, ">= 0")) p.temperature = *v, g.temperature = true;
  if (auto v = r.number("top_p", 0, 1, "in (0, 1]")) {
    if (*v <= 0) {
      r.fail("top_p must be in (0, 1], got " + body["top_p"].dump(), "top_p");
    } else {
      p.top_p = *v, g.top_p = true;
    }
  }
  if (auto v = r.integer("top_k", -1, kInt32Max, "-1, 0 or positive")) {
    p.top_k = static_cast<int32_t>(*v), g.top_k = true;
  }
  if (auto v = r.number("min_p", 0, 1, "in [0, 1]")) p.min_p = *v, g.min_p = true;
  if (auto v = r.number("repetition_penalty", 0, kInf, "> 0")) {
    if (*v <= 0) {
      r.fail("repetition_penalty must be > 0, got " + body["repetition_penalty"].dump(),
             "repetition_penalty");
    } else {
      p.repetition_penalty = *v, g.repetition_penalty = true;
    }
  }
  if (auto v = r.number("presence_penalty", -2, 2, "in [-2, 2]")) p.presence_penalty = *v;
  if (auto v = r.number("frequency_penalty", -2, 2, "in [-2, 2]")) p.frequency_penalty = *v;
  if (auto v = r.integer("seed", std::numeric_limits<int64_t>::min(),
                         std::numeric_limits<int64_t>::max(), "a 64-bit integer")) {
    p.seed = static_cast<uint64_t>(*v);
  }
  if (auto v = r.integer("n", 1, kMaxN, "in [1, 128]")) p.n = static_cast<int32_t>(*v);
  // max_completion_tokens wins over the deprecated max_tokens.
  if (auto v = r.integer("max_tokens", 1, kInt32Max, "at least 1")) {
    o.max_tokens = static_cast<int32_t>(*v);
  }
  if (auto v = r.integer("max_completion_tokens", 1, kInt32Max, "at least 1")) {
    o.max_tokens = static_cast<int32_t>(*v);
    o.max_tokens_param = "max_completion_tokens";
  }
  g.max_tokens = o.max_tokens.has_value();
  if (auto v = r.integer("min_tokens", 0, kInt32Max, ">= 0"))
    p.min_tokens = static_cast<int32_t>(*v);
  if (o.max_tokens && p.min_tokens > *o.max_tokens) {
    r.fail("min_tokens must be at most " + o.max_tokens_param + " (" +
               std::to_string(*o.max_tokens) + "), got " + std::to_string(p.min_tokens),
           "min_tokens");
  }
  if (auto v = r.token_ids("stop_token_ids", /*allow_empty=*/true)) p.stop_token_ids = *v;
  if (auto v = r.boolean("ignore_eos")) p.ignore_eos = *v;

  // stop: a string or a list of strings, none empty.
  if (const Json* stop = r.find("stop")) {
    if (stop->is_string()) {
      o.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const Json& s : *stop) {
        if (!s.is_string()) {
          r.fail("stop must be a string or a list of strings, got an item that is " + type_name(s),
                 "stop");
          break;
        }
        o.stop.push_back(s.get<std::string>());
      }
    } else {
      r.fail("stop must be a string or a list of strings, got " + type_name(*stop), "stop");
    }
    for (const std::string& s : o.stop) {
      if (s.empty()) r.fail("stop must not contain an empty string", "stop");
    }
  }

  if (chat) {
    const bool logprobs = r.boolean("logprobs").value_or(false);
    std::optional<int64_t> top = r.integer("top_logprobs", 0, kMaxLogprobs, "in [0, 20]");
    if (top && *top > 0 && !logprobs) {
      r.fail("when using top_logprobs, logprobs must be set to true", "top_logprobs");
    }
    if (logprobs) o.logprobs = static_cast<int32_t>(top.value_or(0));
  } else {
    if (auto v = r.integer("logprobs", 0, kMaxLogprobs, "in [0, 20]")) {
      o.logprobs = static_cast<int32_t>(*v);
    }
  }
  p.logprobs = o.logprobs;

  o.stream = r.boolean("stream").value_or(false);
  if (const Json* so = r.find("stream_options")) {
    if (!so->is_object()) {
      r.fail("stream_options must be an object, got " + type_name(*so), "stream_options");
    } else if (!o.stream && !so->empty()) {
      r.fail("Stream options can only be defined when `stream=True`.", "stream_options");
    } else {
      // vLLM's StreamOptions.include_usage defaults to true when the object is given.
      auto iu = so->find("include_usage");
      if (iu == so->end()) {
        o.include_usage = o.stream;
      } else if (iu->is_boolean()) {
        o.include_usage = o.stream && iu->get<bool>();
      } else if (!iu->is_null()) {
        r.fail("stream_options.include_usage must be a boolean, got " + type_name(*iu),
               "stream_options");
      }
    }
  }
  if (auto v = r.boolean("use_beam_search"); v && *v) {
    r.fail("beam search is not supported", "use_beam_search");
  }
  o.skip_special_tokens = r.boolean("skip_special_tokens").value_or(true);
  o.include_stop_str_in_output = r.boolean("include_stop_str_in_output").value_or(false);
  o.return_token_ids = r.boolean("return_token_ids").value_or(false);
  o.echo = r.boolean("echo").value_or(false);
  o.add_special_tokens = r.boolean("add_special_tokens").value_or(!chat);
  if (r.error()) return std::nullopt;

  // Request, then generation_config.json, then OpenAI's defaults (SamplingParams' own).
  apply_generation_defaults(defaults.generation, g, &p);
  o.default_max_tokens = defaults.generation.max_new_tokens;
  p.max_tokens = o.max_tokens.value_or(kDefaultCompletionTokens);
  return o;
}

// prompt: a string, a list of strings, a list of token ids, or a list of lists of token ids.
std::vector<PromptInput> read_prompts(FieldReader& r) {
  std::vector<PromptInput> prompts;
  const Json* prompt = r.find("prompt");
  const char* kShapes =
      "prompt must be a string, a list of strings, a list of token ids or a list of lists of "
      "token ids";
  if (!prompt) {
    r.fail("prompt is required", "prompt");
    return prompts;
  }
  auto add_text = [&](const Json& s) {
    if (s.get_ref<const std::string&>().empty()) {
      r.fail("prompt must not be empty", "prompt");
      return;
    }
    prompts.push_back({false, s.get<std::string>(), {}});
  };
  if (prompt->is_string()) {
    add_text(*prompt);
    return prompts;
  }
  if (!prompt->is_array() || prompt->empty()) {
    r.fail(prompt->is_array() ? std::string("prompt must not be empty") : std::string(kShapes),
           "prompt");
    return prompts;
  }
  const Json& first = prompt->front();
  if (first.is_number()) {
    if (auto ids = r.ids_of(*prompt, "prompt")) prompts.push_back({true, {}, std::move(*ids)});
    return prompts;
  }
  for (const Json& item : *prompt) {
    if (first.is_string() && item.is_string()) {
      add_text(item);
    } else if (first.is_array() && item.is_array()) {
      if (item.empty()) {
        r.fail("prompt must not contain an empty list of token ids", "prompt");
      } else if (auto ids = r.ids_of(item, "prompt")) {
        prompts.push_back({true, {}, std::move(*ids)});
      }
    } else {
      r.fail(kShapes, "prompt");
    }
    if (r.error()) break;
  }
  return prompts;
}

// Runs `parse` on the body's object, turning a stray JSON exception (a bug: every access is
// type-checked first) into a 400 rather than letting it cross the module boundary.
template <typename T, typename F>
ApiResult<T> guarded(std::string_view body, F parse) {
  try {
    ApiResult<Json> parsed = parse_body(body);
    if (!parsed.is_ok()) return parsed.error();
    return parse(parsed.value());
  } catch (const nlohmann::json::exception& e) {
    return bad_request_error(std::string("malformed request: ") + e.what());
  }
}

}  // namespace

ApiError bad_request_error(std::string message, std::string param) {
  return {400, std::move(message), "BadRequestError", std::move(param)};
}

ApiError model_not_found_error(std::string_view model) {
  return {404, "The model `" + std::string(model) + "` does not exist.", "NotFoundError", "model"};
}

ApiError service_unavailable_error(std::string message) {
  return {503, std::move(message), "ServiceUnavailableError", ""};
}

ApiError internal_server_error(std::string message) {
  return {500, std::move(message), "InternalServerError", ""};
}

ApiError api_error_from_status(const Status& status, std::string param) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return bad_request_error(status.message(), std::move(param));
    case StatusCode::kNotFound:
      return {404, status.message(), "NotFoundError", std::move(param)};
    case StatusCode::kResourceExhausted:
      return service_unavailable_error(status.message());
    case StatusCode::kUnimplemented:
      return {501, status.message(), "NotImplementedError", std::move(param)};
    default:
      return internal_server_error(status.to_string());
  }
}

ApiResult<CompletionRequest> parse_completion_request(std::string_view body,
                                                      const RequestDefaults& defaults) {
  return guarded<CompletionRequest>(body, [&](const Json& json) -> ApiResult<CompletionRequest> {
    FieldReader r(json);
    std::optional<ApiError> not_found;
    CompletionRequest request;
    std::optional<GenerationOptions> options =
        read_generation_options(r, json, defaults, /*chat=*/false, &not_found);
    if (not_found) return *not_found;
    request.prompts = read_prompts(r);
    if (r.error()) return *r.error();
    request.options = std::move(*options);
    return request;
  });
}

ApiResult<ChatRequest> parse_chat_request(std::string_view body, const RequestDefaults& defaults) {
  return guarded<ChatRequest>(body, [&](const Json& json) -> ApiResult<ChatRequest> {
    FieldReader r(json);
    std::optional<ApiError> not_found;
    ChatRequest request;
    std::optional<GenerationOptions> options =
        read_generation_options(r, json, defaults, /*chat=*/true, &not_found);
    if (not_found) return *not_found;
    std::optional<std::string> messages = read_messages(r);
    request.template_options = read_template_options(r);
    if (r.error()) return *r.error();
    request.options = std::move(*options);
    request.messages_json = std::move(*messages);
    return request;
  });
}

ApiResult<SamplingParams> sampling_params_for_prompt(const GenerationOptions& options,
                                                     int32_t num_prompt_tokens,
                                                     int32_t max_model_len,
                                                     std::string_view prompt_param) {
  TS_CHECK_GT(max_model_len, 0);
  TS_CHECK_GE(num_prompt_tokens, 0);
  const std::string limit =
      "This model's maximum context length is " + std::to_string(max_model_len) + " tokens. ";
  if (num_prompt_tokens >= max_model_len) {
    return bad_request_error(limit + "However, your request has " +
                                 std::to_string(num_prompt_tokens) +
                                 " input tokens, which leaves no room for output tokens. Please "
                                 "reduce the length of the input.",
                             std::string(prompt_param));
  }
  const int32_t left = max_model_len - num_prompt_tokens;
  SamplingParams params = options.params;
  if (options.max_tokens) {
    if (*options.max_tokens > left) {
      const int64_t total = int64_t{num_prompt_tokens} + *options.max_tokens;
      return bad_request_error(
          limit + "However, you requested " + std::to_string(total) + " tokens (" +
              std::to_string(num_prompt_tokens) + " in the input, " +
              std::to_string(*options.max_tokens) +
              " in the completion). Please reduce the length of the input or completion.",
          options.max_tokens_param);
    }
    params.max_tokens = *options.max_tokens;
  } else {
    params.max_tokens = std::min(options.is_chat ? left : kDefaultCompletionTokens, left);
  }
  // As vLLM's get_max_tokens: generation_config's max_new_tokens caps whatever was asked.
  if (options.default_max_tokens) {
    params.max_tokens = std::min(params.max_tokens, *options.default_max_tokens);
  }
  if (params.min_tokens > params.max_tokens) {
    return bad_request_error("min_tokens (" + std::to_string(params.min_tokens) +
                                 ") exceeds the tokens this request may generate (" +
                                 std::to_string(params.max_tokens) + ")",
                             "min_tokens");
  }
  Status valid = params.validate();
  if (!valid.is_ok()) return api_error_from_status(valid);
  return params;
}

ApiResult<TokenizeRequest> parse_tokenize_request(std::string_view body,
                                                  const RequestDefaults& defaults) {
  return guarded<TokenizeRequest>(body, [&](const Json& json) -> ApiResult<TokenizeRequest> {
    FieldReader r(json);
    std::optional<ApiError> not_found;
    TokenizeRequest request;
    std::optional<std::string> model = read_model(r, defaults, &not_found);
    if (not_found) return *not_found;
    if (model) request.model = std::move(*model);
    if (r.has("messages")) {
      request.is_chat = true;
      if (auto m = read_messages(r)) request.messages_json = std::move(*m);
      request.template_options = read_template_options(r);
    } else {
      // vLLM's "prompt", or llama.cpp's "content".
      const char* key = r.has("prompt") ? "prompt" : "content";
      std::optional<std::string> text = r.string(key);
      if (!text && !r.error()) r.fail("prompt (or content, or messages) is required", "prompt");
      if (text) request.text = std::move(*text);
    }
    std::optional<bool> add = r.boolean("add_special_tokens");
    if (!add) add = r.boolean("add_special");  // llama.cpp
    // vLLM adds special tokens to a text prompt by default; llama.cpp's {"content"} does not.
    const bool llama_cpp = !request.is_chat && !r.has("prompt");
    request.add_special_tokens = add.value_or(!request.is_chat && !llama_cpp);
    request.return_token_strs = r.boolean("return_token_strs").value_or(false);
    if (r.error()) return *r.error();
    return request;
  });
}

ApiResult<DetokenizeRequest> parse_detokenize_request(std::string_view body,
                                                      const RequestDefaults& defaults) {
  return guarded<DetokenizeRequest>(body, [&](const Json& json) -> ApiResult<DetokenizeRequest> {
    FieldReader r(json);
    std::optional<ApiError> not_found;
    DetokenizeRequest request;
    std::optional<std::string> model = read_model(r, defaults, &not_found);
    if (not_found) return *not_found;
    if (model) request.model = std::move(*model);
    std::optional<std::vector<int32_t>> tokens = r.token_ids("tokens", /*allow_empty=*/true);
    if (!tokens && !r.error()) r.fail("tokens is required", "tokens");
    if (r.error()) return *r.error();
    request.tokens = std::move(*tokens);
    return request;
  });
}

}  // namespace tierserve

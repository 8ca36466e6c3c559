// The OpenAI API's requests (vLLM's flavour): JSON bodies of /v1/completions,
// /v1/chat/completions, /tokenize and /detokenize parsed and validated into plain structs, and
// the errors a route answers with. Pure functions: no engine, no tokenizer, no sockets.
//
// Flow for the glue: parse_*_request(body) -> tokenize the prompt(s) (or render the chat
// template) -> sampling_params_for_prompt(options, prompt length) -> LlmEngine::add_request.
// Every failure is an ApiError that error_json() (server/openai_response.h) turns into a body.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/check.h"
#include "common/status.h"
#include "engine/model_config.h"
#include "engine/sampling_params.h"
#include "server/chat_prompt.h"

namespace tierserve {

// An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}, where code is the HTTP
// status (as vLLM sends it).
struct ApiError {
  int http_status = 400;  // 400, 404, 413, 500, 501 or 503
  std::string message;    // human-readable; names the field or value at fault
  std::string type;       // vLLM's type string: "BadRequestError", "NotFoundError", ...
  std::string param;      // the request field at fault, "" when none (sent as null)
};

// 400 BadRequestError naming `param`.
ApiError bad_request_error(std::string message, std::string param = {});
// 404 NotFoundError: "The model `<model>` does not exist." (vLLM's wording), param "model".
ApiError model_not_found_error(std::string_view model);
// (Unknown routes, 405, 413 and 431 are answered by the HTTP layer, server/http_server.h, in
// the same shape.)
// 503 ServiceUnavailableError: the model is loading, or the request queue is full.
ApiError service_unavailable_error(std::string message);
// 500 InternalServerError.
ApiError internal_server_error(std::string message);
// An engine Status as an ApiError: kInvalidArgument -> 400 (the engine's context-length message
// says "maximum context length"), kNotFound -> 404, kResourceExhausted -> 503,
// kUnimplemented -> 501 NotImplementedError, anything else -> 500. `param` names the field.
ApiError api_error_from_status(const Status& status, std::string param = {});

// A value or an ApiError. Accessing the wrong alternative is a bug in the caller (TS_CHECK).
template <typename T>
class [[nodiscard]] ApiResult {
 public:
  ApiResult(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  ApiResult(ApiError error) : value_(std::move(error)) {}  // NOLINT: implicit by design

  bool is_ok() const { return value_.index() == 0; }
  const T& value() const& {
    TS_CHECK(is_ok()) << "ApiResult holds an error: " << error().message;
    return std::get<0>(value_);
  }
  T& value() & {
    TS_CHECK(is_ok()) << "ApiResult holds an error: " << std::get<1>(value_).message;
    return std::get<0>(value_);
  }
  T&& value() && {
    TS_CHECK(is_ok()) << "ApiResult holds an error: " << std::get<1>(value_).message;
    return std::get<0>(std::move(value_));
  }
  const ApiError& error() const {
    TS_CHECK(!is_ok()) << "ApiResult holds a value";
    return std::get<1>(value_);
  }

 private:
  std::variant<T, ApiError> value_;
};

// What the server knows before a request arrives.
struct RequestDefaults {
  std::vector<std::string> served_model_names;  // accepted `model` values; the first is the
                                                // default when `model` is absent; empty = any
  GenerationDefaults generation;                // the model's generation_config.json
  int32_t max_model_len = 0;                    // context length (prompt + output), > 0
};

// Fields shared by completion and chat requests, validated and with defaults applied (request,
// then generation_config.json, then OpenAI's), except max_tokens, which needs the prompt's
// length: see sampling_params_for_prompt().
struct GenerationOptions {
  std::string model;                            // as given, or the first served name when absent
  SamplingParams params;                        // every field final but max_tokens
  SamplingFieldsGiven given;                    // which fields the request set
  std::optional<int32_t> max_tokens;            // max_completion_tokens, else max_tokens, as given
  std::string max_tokens_param = "max_tokens";  // which of the two gave max_tokens
  std::optional<int32_t> default_max_tokens;    // generation_config's max_new_tokens
  bool is_chat = false;                         // absent max_tokens: context left (chat) or 16
  std::vector<std::string> stop;                // stop strings (non-empty strings)
  bool include_stop_str_in_output = false;      // keep a matched stop string in the text
  bool stream = false;                          // answer with server-sent events
  bool include_usage = false;                   // stream_options.include_usage: a final usage chunk
  bool skip_special_tokens = true;              // decode without special tokens
  bool return_token_ids = false;                // responses carry prompt_token_ids and token_ids
  bool echo = false;                            // completions: the prompt is prepended to the text
  bool add_special_tokens = true;               // tokenize with BOS etc. (chat: false by default)
  // Log-probabilities: absent = none; k = the sampled token's and (where the engine provides
  // them) k alternatives'. Equals params.logprobs.
  std::optional<int32_t> logprobs;
};

// One prompt of a completion request: text to tokenize, or token ids used as given.
struct PromptInput {
  bool is_tokens = false;          // token_ids (true) or text (false)
  std::string text;                // the prompt text
  std::vector<int32_t> token_ids;  // the prompt's ids, each >= 0
};

struct CompletionRequest {
  GenerationOptions options;
  std::vector<PromptInput> prompts;  // >= 1; choice index = prompt index * n + output index
};

struct ChatRequest {
  GenerationOptions options;
  // The messages as a JSON array of objects with a string "role" and a string (or null)
  // "content" (content parts joined by "\n"); other keys (name, tool_calls, ...) kept. This is
  // what render_chat_prompt (server/chat_prompt.h) takes.
  std::string messages_json;
  ChatPromptOptions template_options;  // add_generation_prompt, continue_final_message,
                                       // chat_template_kwargs
};

// Parses a /v1/completions body. `prompt` may be a string, a list of strings, a list of token
// ids, or a list of lists of token ids. Errors: 400 naming the field (bad JSON, wrong type, value
// out of range), 404 for a model not in defaults.served_model_names.
ApiResult<CompletionRequest> parse_completion_request(std::string_view body,
                                                      const RequestDefaults& defaults);
// Parses a /v1/chat/completions body; same errors.
ApiResult<ChatRequest> parse_chat_request(std::string_view body, const RequestDefaults& defaults);

// The SamplingParams for one prompt of `num_prompt_tokens` tokens: max_tokens is the request's
// (400 naming max_tokens or max_completion_tokens if prompt + max_tokens exceeds the maximum
// context length), else the context left (chat) or 16 (completions), capped at the context left;
// generation_config's max_new_tokens, when set, caps it further (vLLM's get_max_tokens). A prompt
// that fills the context is a 400 naming `prompt_param` ("messages" or "prompt"). Both messages
// contain "maximum context length".
ApiResult<SamplingParams> sampling_params_for_prompt(const GenerationOptions& options,
                                                     int32_t num_prompt_tokens,
                                                     int32_t max_model_len,
                                                     std::string_view prompt_param);

// POST /tokenize: vLLM's {"prompt"} or {"messages"}, or llama.cpp's {"content"}.
struct TokenizeRequest {
  std::string model;                   // as given, or the first served name
  bool is_chat = false;                // messages (true) or text (false)
  std::string text;                    // prompt / content
  std::string messages_json;           // as ChatRequest::messages_json
  ChatPromptOptions template_options;  // chat only
  bool add_special_tokens = true;      // vLLM: true for "prompt", false for messages; llama.cpp:
                                       // false for "content"; "add_special" is an alias
  bool return_token_strs = false;      // also answer with each token's vocabulary string
};
ApiResult<TokenizeRequest> parse_tokenize_request(std::string_view body,
                                                  const RequestDefaults& defaults);

// POST /detokenize: {"tokens": [ids]} (vLLM and llama.cpp).
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;  // each >= 0
};
ApiResult<DetokenizeRequest> parse_detokenize_request(std::string_view body,
                                                      const RequestDefaults& defaults);

}  // namespace tierserve

// The OpenAI API's responses (vLLM's flavour) as JSON text: completions and chat completions,
// their server-sent-event stream chunks, errors, /v1/models, /version, /tokenize and
// /detokenize. Pure functions of their arguments (ids and timestamps are made by the helpers
// below and passed in), so every shape is testable field by field.
//
// A stream, as vLLM sends it: for chat, one chunk per choice with delta {"role": "assistant",
// "content": ""} once the first token exists; then content chunks; a chunk with finish_reason per
// choice; with stream_options.include_usage one chunk with "choices": [] and "usage"; then
// "data: [DONE]". An error after the stream began is sse_error_event() followed by [DONE].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/openai_request.h"

namespace tierserve {

// "cmpl-" / "chatcmpl-" followed by 32 random hex digits (vLLM's ids).
std::string make_completion_id();
std::string make_chat_completion_id();
// Seconds since the Unix epoch.
int64_t unix_seconds_now();
// Unicode code points in UTF-8 `text` (Python's len(), which vLLM's text_offset counts).
int64_t code_points(std::string_view text);

// What every response object starts with.
struct ResponseMeta {
  std::string id;       // make_completion_id() or make_chat_completion_id()
  int64_t created = 0;  // unix_seconds_now() when the request arrived
  std::string model;    // the served model name the request named
};

// OpenAI's usage object; vLLM adds prompt_tokens_details.cached_tokens when known.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::optional<int64_t> cached_tokens;  // prompt tokens served from the prefix cache
};

// The log-probability of one generated token and of its alternatives.
struct TokenLogprob {
  std::string token;                               // the token's text
  float logprob = 0;                               // -inf is sent as -9999.0, as vLLM does
  std::vector<std::pair<std::string, float>> top;  // alternatives (text, logprob), best first
};

// Why a choice stopped, beyond finish_reason (vLLM's stop_reason): the stop string or the stop
// token id that matched, or neither (EOS, length) = null.
struct StopReason {
  std::optional<std::string> text;
  std::optional<int32_t> token_id;
};

// One choice of a finished, non-streamed response.
struct ChoiceOutput {
  int32_t index = 0;                      // prompt index * n + output index
  std::string text;                       // generated text (completions: the prompt first if echo)
  std::string finish_reason;              // "stop", "length", "abort" (or "error")
  StopReason stop_reason;                 // see StopReason
  std::vector<int32_t> token_ids;         // generated ids; sent when return_token_ids
  std::vector<int32_t> prompt_token_ids;  // completions: this choice's prompt (return_token_ids)
  std::optional<std::vector<TokenLogprob>> logprobs;  // one per generated token, if asked for
  int64_t text_offset = 0;  // completions' logprobs: code points of text before the first token
                            // (the echoed prompt)
};

// /v1/completions, object "text_completion". `return_token_ids` adds token_ids and
// prompt_token_ids to each choice.
std::string completion_response_json(const ResponseMeta& meta,
                                     const std::vector<ChoiceOutput>& choices, const Usage& usage,
                                     bool return_token_ids);

// /v1/chat/completions, object "chat.completion"; each choice's message is {"role": "assistant",
// "content": text}. `prompt_token_ids`, if given (return_token_ids), is added at the top level
// and each choice gets token_ids.
std::string chat_completion_response_json(const ResponseMeta& meta,
                                          const std::vector<ChoiceOutput>& choices,
                                          const Usage& usage,
                                          const std::vector<int32_t>* prompt_token_ids);

// The new output of one choice since its previous chunk.
struct StreamDelta {
  int32_t index = 0;
  std::string text;                                   // new text (may be empty)
  std::vector<int32_t> token_ids;                     // new ids; sent when return_token_ids
  std::optional<std::vector<TokenLogprob>> logprobs;  // for the new tokens, if asked for
  int64_t text_offset = 0;    // completions' logprobs: code points of the choice's text before
                              // this chunk's first token (cumulative over the stream)
  std::string finish_reason;  // "" while unfinished; otherwise sent with stop_reason
  StopReason stop_reason;
};

// "data: <json>\n\n".
std::string sse_event(std::string_view json);
// "data: [DONE]\n\n".
std::string sse_done();

// Chat: the first chunk of choice `index`, delta {"role": "assistant", "content": ""}.
// `prompt_token_ids` (return_token_ids) is added at the top level.
std::string chat_role_chunk(const ResponseMeta& meta, int32_t index,
                            const std::vector<int32_t>* prompt_token_ids);
// Chat: a content chunk, or (finish_reason set) the choice's final chunk, whose delta is {} when
// no text is left. `return_token_ids` adds the delta's token_ids.
std::string chat_delta_chunk(const ResponseMeta& meta, const StreamDelta& delta,
                             bool return_token_ids);
// Completions: a text chunk or final chunk. `prompt_token_ids`, if given (return_token_ids, on
// the choice's first chunk), goes into the choice, like `token_ids`.
std::string completion_delta_chunk(const ResponseMeta& meta, const StreamDelta& delta,
                                   bool return_token_ids,
                                   const std::vector<int32_t>* prompt_token_ids);
// The usage chunk: "choices": [] and "usage". `chat` selects the object name.
std::string usage_chunk(const ResponseMeta& meta, const Usage& usage, bool chat);

// {"error": {"message", "type", "param", "code"}}; code is the HTTP status.
std::string error_json(const ApiError& error);
// An error after the stream began: "data: {"error": ...}\n\n" (then send sse_done()).
std::string sse_error_event(const ApiError& error);

// GET /v1/models: one model card.
struct ModelCard {
  std::string id;             // the served model name
  std::string root;           // the model directory or repository it came from
  int32_t max_model_len = 0;  // context length
  int64_t created = 0;        // unix seconds
  std::string owned_by = "tierserve";
};
std::string models_json(const std::vector<ModelCard>& models);

// GET /version: {"version": "..."}.
std::string version_json(std::string_view version);

// POST /tokenize: {"count", "max_model_len", "tokens", "token_strs"} (token_strs null unless
// given).
std::string tokenize_response_json(const std::vector<int32_t>& tokens, int32_t max_model_len,
                                   const std::vector<std::string>* token_strs);
// POST /detokenize: {"prompt": text} (vLLM) with llama.cpp's "content" alongside.
std::string detokenize_response_json(std::string_view text);

}  // namespace tierserve

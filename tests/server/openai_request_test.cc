// Request parsing and validation for the OpenAI routes: every field, every error with its status
// and param, defaults precedence, prompt shapes, and the max_tokens resolution.
#include "server/openai_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace tierserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RequestDefaults defaults() {
  RequestDefaults d;
  d.served_model_names = {"tiny", "tiny-alias"};
  d.max_model_len = 100;
  return d;
}

CompletionRequest completion(const std::string& body, const RequestDefaults& d = defaults()) {
  ApiResult<CompletionRequest> r = parse_completion_request(body, d);
  EXPECT_TRUE(r.is_ok()) << (r.is_ok() ? "" : r.error().message) << " for " << body;
  return r.is_ok() ? r.value() : CompletionRequest{};
}

ChatRequest chat(const std::string& body, const RequestDefaults& d = defaults()) {
  ApiResult<ChatRequest> r = parse_chat_request(body, d);
  EXPECT_TRUE(r.is_ok()) << (r.is_ok() ? "" : r.error().message) << " for " << body;
  return r.is_ok() ? r.value() : ChatRequest{};
}

// The error of a completion body whose other fields are valid.
ApiError completion_error(const std::string& fields) {
  const std::string body = R"({"model": "tiny", "prompt": "hi")" +
                           (fields.empty() ? std::string() : ", " + fields) + "}";
  ApiResult<CompletionRequest> r = parse_completion_request(body, defaults());
  EXPECT_FALSE(r.is_ok()) << body;
  return r.is_ok() ? ApiError{} : r.error();
}

ApiError chat_error(const std::string& fields,
                    const std::string& messages = R"([{"role": "user", "content": "hi"}])") {
  std::string body = "{\"messages\": " + messages;
  if (!fields.empty()) body += ", " + fields;
  body += "}";
  ApiResult<ChatRequest> r = parse_chat_request(body, defaults());
  EXPECT_FALSE(r.is_ok()) << body;
  return r.is_ok() ? ApiError{} : r.error();
}

void expect_bad_request(const ApiError& e, const std::string& param) {
  EXPECT_EQ(e.http_status, 400) << e.message;
  EXPECT_EQ(e.type, "BadRequestError");
  EXPECT_EQ(e.param, param) << e.message;
  EXPECT_FALSE(e.message.empty());
}

TEST(OpenAiRequestTest, CompletionDefaults) {
  CompletionRequest r = completion(R"({"model": "tiny", "prompt": "Hello"})");
  const GenerationOptions& o = r.options;
  EXPECT_EQ(o.model, "tiny");
  EXPECT_FALSE(o.is_chat);
  EXPECT_FALSE(o.max_tokens.has_value());
  EXPECT_EQ(o.params.temperature, 1.0);
  EXPECT_EQ(o.params.top_p, 1.0);
  EXPECT_EQ(o.params.top_k, 0);
  EXPECT_EQ(o.params.min_p, 0.0);
  EXPECT_EQ(o.params.n, 1);
  EXPECT_FALSE(o.params.seed.has_value());
  EXPECT_FALSE(o.params.logprobs.has_value());
  EXPECT_TRUE(o.stop.empty());
  EXPECT_FALSE(o.stream);
  EXPECT_FALSE(o.include_usage);
  EXPECT_TRUE(o.skip_special_tokens);
  EXPECT_FALSE(o.return_token_ids);
  EXPECT_FALSE(o.echo);
  EXPECT_TRUE(o.add_special_tokens);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_tokens);
  EXPECT_EQ(r.prompts[0].text, "Hello");
}

TEST(OpenAiRequestTest, EveryFieldIsRead) {
  CompletionRequest r = completion(R"({
    "model": "tiny-alias", "prompt": "x", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
    "top_k": 40, "min_p": 0.05, "seed": 1234, "stop": ["a", "bc"], "stop_token_ids": [3, 4],
    "n": 3, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.2,
    "ignore_eos": true, "min_tokens": 2, "logprobs": 5, "stream": true,
    "stream_options": {"include_usage": true}, "skip_special_tokens": false,
    "return_token_ids": true, "echo": true, "add_special_tokens": false,
    "include_stop_str_in_output": true})");
  const GenerationOptions& o = r.options;
  const SamplingParams& p = o.params;
  EXPECT_EQ(o.model, "tiny-alias");
  EXPECT_EQ(o.max_tokens, 7);
  EXPECT_EQ(o.max_tokens_param, "max_tokens");
  EXPECT_EQ(p.temperature, 0.5);
  EXPECT_EQ(p.top_p, 0.9);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_EQ(p.min_p, 0.05);
  EXPECT_EQ(p.seed, 1234u);
  EXPECT_THAT(o.stop, ElementsAre("a", "bc"));
  EXPECT_THAT(p.stop_token_ids, ElementsAre(3, 4));
  EXPECT_EQ(p.n, 3);
  EXPECT_EQ(p.presence_penalty, 0.5);
  EXPECT_EQ(p.frequency_penalty, -0.5);
  EXPECT_EQ(p.repetition_penalty, 1.2);
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_EQ(p.min_tokens, 2);
  EXPECT_EQ(o.logprobs, 5);
  EXPECT_EQ(p.logprobs, 5);
  EXPECT_TRUE(o.stream);
  EXPECT_TRUE(o.include_usage);
  EXPECT_FALSE(o.skip_special_tokens);
  EXPECT_TRUE(o.return_token_ids);
  EXPECT_TRUE(o.echo);
  EXPECT_FALSE(o.add_special_tokens);
  EXPECT_TRUE(o.include_stop_str_in_output);
  EXPECT_TRUE(o.given.temperature && o.given.top_p && o.given.top_k && o.given.min_p &&
              o.given.repetition_penalty && o.given.max_tokens);
}

TEST(OpenAiRequestTest, NullsAndUnknownFieldsAreIgnored) {
  CompletionRequest r = completion(R"({"prompt": "x", "temperature": null, "max_tokens": null,
      "stop": null, "user": "me", "logit_bias": {"1": 2}, "suffix": "s", "future_field": [1]})");
  EXPECT_EQ(r.options.model, "tiny");  // absent: the first served name
  EXPECT_FALSE(r.options.given.temperature);
  EXPECT_FALSE(r.options.max_tokens.has_value());
  EXPECT_TRUE(r.options.stop.empty());
}

TEST(OpenAiRequestTest, IntegralFloatsAreIntegers) {
  CompletionRequest r = completion(R"({"prompt": "x", "max_tokens": 8.0, "n": 2.0})");
  EXPECT_EQ(r.options.max_tokens, 8);
  EXPECT_EQ(r.options.params.n, 2);
  expect_bad_request(completion_error(R"("max_tokens": 8.5)"), "max_tokens");
}

TEST(OpenAiRequestTest, NegativeSeedWrapsToUnsigned) {
  CompletionRequest r = completion(R"({"prompt": "x", "seed": -1})");
  EXPECT_EQ(r.options.params.seed, ~uint64_t{0});
}

TEST(OpenAiRequestTest, MaxCompletionTokensWinsOverMaxTokens) {
  ChatRequest r = chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                           "max_completion_tokens": 9})");
  EXPECT_EQ(r.options.max_tokens, 9);
  EXPECT_EQ(r.options.max_tokens_param, "max_completion_tokens");
  expect_bad_request(chat_error(R"("max_completion_tokens": 0)"), "max_completion_tokens");
}

TEST(OpenAiRequestTest, GenerationConfigDefaultsThenOpenAiDefaults) {
  RequestDefaults d = defaults();
  d.generation.temperature = 0.6;
  d.generation.top_p = 0.8;
  d.generation.top_k = 20;
  d.generation.min_p = 0.1;
  d.generation.repetition_penalty = 1.1;
  d.generation.max_new_tokens = 30;
  // Absent fields take generation_config.json's values.
  CompletionRequest a = completion(R"({"prompt": "x"})", d);
  EXPECT_EQ(a.options.params.temperature, 0.6);
  EXPECT_EQ(a.options.params.top_p, 0.8);
  EXPECT_EQ(a.options.params.top_k, 20);
  EXPECT_EQ(a.options.params.min_p, 0.1);
  EXPECT_EQ(a.options.params.repetition_penalty, 1.1);
  EXPECT_EQ(a.options.default_max_tokens, 30);
  // Given fields win, including a given 0.
  CompletionRequest b = completion(
      R"({"prompt": "x", "temperature": 0, "top_p": 1, "top_k": 0, "min_p": 0,
          "repetition_penalty": 1.0, "max_tokens": 4})",
      d);
  EXPECT_EQ(b.options.params.temperature, 0.0);
  EXPECT_EQ(b.options.params.top_p, 1.0);
  EXPECT_EQ(b.options.params.top_k, 0);
  EXPECT_EQ(b.options.params.min_p, 0.0);
  EXPECT_EQ(b.options.params.repetition_penalty, 1.0);
  EXPECT_EQ(b.options.max_tokens, 4);
  // Without generation_config, OpenAI's defaults.
  CompletionRequest c = completion(R"({"prompt": "x"})");
  EXPECT_EQ(c.options.params.temperature, 1.0);
  EXPECT_FALSE(c.options.default_max_tokens.has_value());
}

TEST(OpenAiRequestTest, PromptShapes) {
  CompletionRequest list = completion(R"({"prompt": ["a", "b c"]})");
  ASSERT_EQ(list.prompts.size(), 2u);
  EXPECT_EQ(list.prompts[1].text, "b c");
  EXPECT_FALSE(list.prompts[1].is_tokens);

  CompletionRequest ids = completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_TRUE(ids.prompts[0].is_tokens);
  EXPECT_THAT(ids.prompts[0].token_ids, ElementsAre(1, 2, 3));

  CompletionRequest lists = completion(R"({"prompt": [[1, 2], [3]]})");
  ASSERT_EQ(lists.prompts.size(), 2u);
  EXPECT_THAT(lists.prompts[0].token_ids, ElementsAre(1, 2));
  EXPECT_THAT(lists.prompts[1].token_ids, ElementsAre(3));
  EXPECT_TRUE(lists.prompts[1].is_tokens);
}

TEST(OpenAiRequestTest, BadPrompts) {
  const char* bad[] = {
      R"({"model": "tiny"})",          // missing
      R"({"prompt": ""})",             // empty string
      R"({"prompt": []})",             // empty list
      R"({"prompt": 5})",              // number
      R"({"prompt": {"text": "x"}})",  // object
      R"({"prompt": ["a", 1]})",       // mixed
      R"({"prompt": [1, "a"]})",       // mixed
      R"({"prompt": [[1], "a"]})",     // mixed
      R"({"prompt": [[1], []]})",      // empty token list
      R"({"prompt": [1, -2]})",        // negative id
      R"({"prompt": [1, 2.5]})",       // fractional id
      R"({"prompt": [4294967296]})",   // beyond int32
      R"({"prompt": ["a", ""]})",      // empty string in list
      R"({"prompt": [true]})",         // boolean
  };
  for (const char* body : bad) {
    ApiResult<CompletionRequest> r = parse_completion_request(body, defaults());
    ASSERT_FALSE(r.is_ok()) << body;
    expect_bad_request(r.error(), "prompt");
  }
}

TEST(OpenAiRequestTest, WrongTypesNameTheField) {
  struct Case {
    const char* fields;
    const char* param;
  };
  const Case cases[] = {
      {R"("model": 3)", "model"},
      {R"("temperature": "hot")", "temperature"},
      {R"("top_p": [1])", "top_p"},
      {R"("top_k": 1.5)", "top_k"},
      {R"("min_p": true)", "min_p"},
      {R"("seed": "1")", "seed"},
      {R"("seed": 1e30)", "seed"},
      {R"("seed": 18446744073709551615)", "seed"},
      {R"("stop": 3)", "stop"},
      {R"("stop": ["a", 3])", "stop"},
      {R"("stop_token_ids": 3)", "stop_token_ids"},
      {R"("stop_token_ids": [-1])", "stop_token_ids"},
      {R"("n": "2")", "n"},
      {R"("presence_penalty": "x")", "presence_penalty"},
      {R"("frequency_penalty": {})", "frequency_penalty"},
      {R"("repetition_penalty": "x")", "repetition_penalty"},
      {R"("ignore_eos": 1)", "ignore_eos"},
      {R"("min_tokens": "1")", "min_tokens"},
      {R"("logprobs": true)", "logprobs"},
      {R"("stream": "yes")", "stream"},
      {R"("stream": true, "stream_options": 1)", "stream_options"},
      {R"("stream": true, "stream_options": {"include_usage": "y"})", "stream_options"},
      {R"("skip_special_tokens": 0)", "skip_special_tokens"},
      {R"("return_token_ids": "true")", "return_token_ids"},
      {R"("echo": 1)", "echo"},
      {R"("add_special_tokens": "no")", "add_special_tokens"},
      {R"("max_tokens": "16")", "max_tokens"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fields);
    expect_bad_request(completion_error(c.fields), c.param);
  }
}

TEST(OpenAiRequestTest, RangesNameTheField) {
  struct Case {
    const char* fields;
    const char* param;
  };
  const Case cases[] = {
      {R"("temperature": -0.1)", "temperature"},
      {R"("top_p": 0)", "top_p"},
      {R"("top_p": 1.01)", "top_p"},
      {R"("top_k": -2)", "top_k"},
      {R"("min_p": 1.5)", "min_p"},
      {R"("min_p": -0.1)", "min_p"},
      {R"("repetition_penalty": 0)", "repetition_penalty"},
      {R"("presence_penalty": 2.5)", "presence_penalty"},
      {R"("frequency_penalty": -2.5)", "frequency_penalty"},
      {R"("n": 0)", "n"},
      {R"("n": 129)", "n"},
      {R"("max_tokens": 0)", "max_tokens"},
      {R"("max_tokens": -5)", "max_tokens"},
      {R"("max_tokens": 3000000000)", "max_tokens"},
      {R"("min_tokens": -1)", "min_tokens"},
      {R"("max_tokens": 4, "min_tokens": 5)", "min_tokens"},
      {R"("logprobs": 21)", "logprobs"},
      {R"("logprobs": -1)", "logprobs"},
      {R"("stop": "")", "stop"},
      {R"("stop": ["a", ""])", "stop"},
      {R"("stream_options": {"include_usage": true})", "stream_options"},  // without stream
      {R"("use_beam_search": true)", "use_beam_search"},
      {R"("temperature": 1e999)", ""},  // nlohmann refuses the overflow: invalid JSON
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fields);
    ApiError e = completion_error(c.fields);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.param, c.param) << e.message;
  }
}

TEST(OpenAiRequestTest, StreamOptions) {
  // vLLM: an empty stream_options object with stream=true includes usage; so does absent key.
  EXPECT_TRUE(
      completion(R"({"prompt": "x", "stream": true, "stream_options": {}})").options.include_usage);
  EXPECT_FALSE(completion(R"({"prompt": "x", "stream": true})").options.include_usage);
  EXPECT_FALSE(
      completion(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": false}})")
          .options.include_usage);
  // An empty object without stream is accepted (vLLM checks truthiness).
  EXPECT_FALSE(completion(R"({"prompt": "x", "stream_options": {}})").options.include_usage);
}

TEST(OpenAiRequestTest, BodyErrors) {
  for (const char* body : {"", "{", "[1, 2]", "\"text\"", "null", "{\"prompt\": \"x\"} trailing",
                           "{\"prompt\": \"\xff\"}"}) {
    ApiResult<CompletionRequest> r = parse_completion_request(body, defaults());
    ASSERT_FALSE(r.is_ok()) << body;
    expect_bad_request(r.error(), "");
  }
}

TEST(OpenAiRequestTest, UnknownModelIs404) {
  ApiResult<CompletionRequest> r =
      parse_completion_request(R"({"model": "gpt-4", "prompt": "x"})", defaults());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.error().http_status, 404);
  EXPECT_EQ(r.error().type, "NotFoundError");
  EXPECT_EQ(r.error().param, "model");
  EXPECT_EQ(r.error().message, "The model `gpt-4` does not exist.");
  ApiResult<ChatRequest> c = parse_chat_request(
      R"({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})", defaults());
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.error().http_status, 404);
  // With no served names, any model is accepted.
  RequestDefaults any = defaults();
  any.served_model_names.clear();
  EXPECT_EQ(completion(R"({"model": "whatever", "prompt": "x"})", any).options.model, "whatever");
}

TEST(OpenAiRequestTest, ChatDefaultsAndFields) {
  ChatRequest r = chat(R"({"messages": [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "hi"}]})");
  EXPECT_TRUE(r.options.is_chat);
  EXPECT_TRUE(r.template_options.add_generation_prompt);
  EXPECT_FALSE(r.template_options.continue_final_message);
  EXPECT_EQ(r.template_options.chat_template_kwargs_json, "{}");
  EXPECT_FALSE(r.options.add_special_tokens);  // the template adds BOS
  EXPECT_FALSE(r.options.logprobs.has_value());
  nlohmann::json messages = nlohmann::json::parse(r.messages_json);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0]["role"], "system");
  EXPECT_EQ(messages[1]["content"], "hi");

  ChatRequest f = chat(R"({"messages": [{"role": "user", "content": "hi"}],
      "add_generation_prompt": false, "chat_template_kwargs": {"enable_thinking": false},
      "logprobs": true, "top_logprobs": 3})");
  EXPECT_FALSE(f.template_options.add_generation_prompt);
  EXPECT_EQ(nlohmann::json::parse(f.template_options.chat_template_kwargs_json),
            nlohmann::json::parse(R"({"enable_thinking": false})"));
  EXPECT_EQ(f.options.logprobs, 3);
  EXPECT_EQ(f.options.params.logprobs, 3);

  ChatRequest l = chat(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true})");
  EXPECT_EQ(l.options.logprobs, 0);  // the sampled token's logprob only
}

TEST(OpenAiRequestTest, ChatContentPartsAreJoined) {
  ChatRequest r = chat(R"({"messages": [{"role": "user", "content": [
      {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]}]})");
  nlohmann::json messages = nlohmann::json::parse(r.messages_json);
  EXPECT_EQ(messages[0]["content"], "one\ntwo");
  EXPECT_TRUE(messages[1]["content"].is_null());
  EXPECT_EQ(messages[1]["tool_calls"][0]["id"], "c1");  // other keys kept
}

TEST(OpenAiRequestTest, ChatErrors) {
  expect_bad_request(chat_error("", "[]"), "messages");
  expect_bad_request(chat_error("", "\"hi\""), "messages");
  expect_bad_request(chat_error("", "[1]"), "messages");
  expect_bad_request(chat_error("", R"([{"content": "no role"}])"), "messages");
  expect_bad_request(chat_error("", R"([{"role": 1, "content": "x"}])"), "messages");
  expect_bad_request(chat_error("", R"([{"role": "user", "content": 5}])"), "messages");
  expect_bad_request(
      chat_error("", R"([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])"),
      "messages");
  expect_bad_request(chat_error(R"("top_logprobs": 2)"), "top_logprobs");
  expect_bad_request(chat_error(R"("logprobs": true, "top_logprobs": 21)"), "top_logprobs");
  expect_bad_request(chat_error(R"("logprobs": 3)"), "logprobs");
  expect_bad_request(chat_error(R"("chat_template_kwargs": [1])"), "chat_template_kwargs");
  expect_bad_request(chat_error(R"("add_generation_prompt": "no")"), "add_generation_prompt");
  expect_bad_request(chat_error(R"("continue_final_message": true)"), "continue_final_message");
  // A missing messages field.
  ApiResult<ChatRequest> r = parse_chat_request(R"({"model": "tiny"})", defaults());
  ASSERT_FALSE(r.is_ok());
  expect_bad_request(r.error(), "messages");
}

TEST(OpenAiRequestTest, MaxTokensForChatIsTheContextLeft) {
  ChatRequest r = chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ApiResult<SamplingParams> p = sampling_params_for_prompt(r.options, 30, 100, "messages");
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p.value().max_tokens, 70);
}

TEST(OpenAiRequestTest, MaxTokensForCompletionsIs16CappedByTheContext) {
  CompletionRequest r = completion(R"({"prompt": "x"})");
  EXPECT_EQ(sampling_params_for_prompt(r.options, 30, 100, "prompt").value().max_tokens, 16);
  EXPECT_EQ(sampling_params_for_prompt(r.options, 90, 100, "prompt").value().max_tokens, 10);
}

TEST(OpenAiRequestTest, MaxTokensFromGenerationConfig) {
  RequestDefaults d = defaults();
  d.generation.max_new_tokens = 20;
  ChatRequest r = chat(R"({"messages": [{"role": "user", "content": "hi"}]})", d);
  EXPECT_EQ(sampling_params_for_prompt(r.options, 10, 100, "messages").value().max_tokens, 20);
  EXPECT_EQ(sampling_params_for_prompt(r.options, 95, 100, "messages").value().max_tokens, 5);
  // As vLLM's get_max_tokens, max_new_tokens caps the request's own value too ...
  ChatRequest g = chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40})", d);
  EXPECT_EQ(sampling_params_for_prompt(g.options, 10, 100, "messages").value().max_tokens, 20);
  ChatRequest s = chat(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7})", d);
  EXPECT_EQ(sampling_params_for_prompt(s.options, 10, 100, "messages").value().max_tokens, 7);
  // ... and completions keep their default of 16 below it.
  d.generation.max_new_tokens = 30;
  CompletionRequest c = completion(R"({"prompt": "x"})", d);
  EXPECT_EQ(sampling_params_for_prompt(c.options, 10, 100, "prompt").value().max_tokens, 16);
}

TEST(OpenAiRequestTest, ContextLengthErrors) {
  CompletionRequest r = completion(R"({"prompt": "x", "max_tokens": 50})");
  ASSERT_TRUE(sampling_params_for_prompt(r.options, 50, 100, "prompt").is_ok());
  ApiResult<SamplingParams> over = sampling_params_for_prompt(r.options, 51, 100, "prompt");
  ASSERT_FALSE(over.is_ok());
  expect_bad_request(over.error(), "max_tokens");
  EXPECT_THAT(over.error().message, HasSubstr("maximum context length is 100 tokens"));
  EXPECT_THAT(over.error().message, HasSubstr("101 tokens"));

  ChatRequest c = chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ApiResult<SamplingParams> full = sampling_params_for_prompt(c.options, 100, 100, "messages");
  ASSERT_FALSE(full.is_ok());
  expect_bad_request(full.error(), "messages");
  EXPECT_THAT(full.error().message, HasSubstr("maximum context length"));

  ChatRequest m = chat(R"({"messages": [{"role": "user", "content": "hi"}],
                           "max_completion_tokens": 80})");
  ApiResult<SamplingParams> e = sampling_params_for_prompt(m.options, 30, 100, "messages");
  ASSERT_FALSE(e.is_ok());
  expect_bad_request(e.error(), "max_completion_tokens");
}

TEST(OpenAiRequestTest, MinTokensBeyondTheResolvedMaximum) {
  ChatRequest r = chat(R"({"messages": [{"role": "user", "content": "hi"}], "min_tokens": 20})");
  ASSERT_TRUE(sampling_params_for_prompt(r.options, 50, 100, "messages").is_ok());
  ApiResult<SamplingParams> p = sampling_params_for_prompt(r.options, 90, 100, "messages");
  ASSERT_FALSE(p.is_ok());
  expect_bad_request(p.error(), "min_tokens");
}

TEST(OpenAiRequestTest, ApiErrorsFromStatus) {
  ApiError bad = api_error_from_status(invalid_argument("this model's maximum context length"));
  EXPECT_EQ(bad.http_status, 400);
  EXPECT_EQ(bad.type, "BadRequestError");
  EXPECT_EQ(bad.message, "this model's maximum context length");
  EXPECT_EQ(api_error_from_status(not_found("x")).http_status, 404);
  EXPECT_EQ(api_error_from_status(not_found("x")).type, "NotFoundError");
  ApiError full = api_error_from_status(resource_exhausted("queue full"));
  EXPECT_EQ(full.http_status, 503);
  EXPECT_EQ(full.type, "ServiceUnavailableError");
  EXPECT_EQ(api_error_from_status(unimplemented("x")).http_status, 501);
  ApiError internal = api_error_from_status(io_error("disk"));
  EXPECT_EQ(internal.http_status, 500);
  EXPECT_EQ(internal.type, "InternalServerError");
  EXPECT_EQ(service_unavailable_error("loading").http_status, 503);
}

TEST(OpenAiRequestTest, Tokenize) {
  ApiResult<TokenizeRequest> v = parse_tokenize_request(R"({"prompt": "hello"})", defaults());
  ASSERT_TRUE(v.is_ok());
  EXPECT_FALSE(v.value().is_chat);
  EXPECT_EQ(v.value().text, "hello");
  EXPECT_TRUE(v.value().add_special_tokens);
  EXPECT_FALSE(v.value().return_token_strs);
  EXPECT_EQ(v.value().model, "tiny");

  ApiResult<TokenizeRequest> l =
      parse_tokenize_request(R"({"content": "hi", "add_special": true})", defaults());
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l.value().text, "hi");
  EXPECT_TRUE(l.value().add_special_tokens);
  // llama.cpp's default for "content" is no special tokens.
  EXPECT_FALSE(
      parse_tokenize_request(R"({"content": "hi"})", defaults()).value().add_special_tokens);

  ApiResult<TokenizeRequest> c = parse_tokenize_request(
      R"({"messages": [{"role": "user", "content": "x"}], "return_token_strs": true,
          "add_generation_prompt": false})",
      defaults());
  ASSERT_TRUE(c.is_ok());
  EXPECT_TRUE(c.value().is_chat);
  EXPECT_FALSE(c.value().add_special_tokens);
  EXPECT_FALSE(c.value().template_options.add_generation_prompt);
  EXPECT_TRUE(c.value().return_token_strs);
  EXPECT_EQ(nlohmann::json::parse(c.value().messages_json)[0]["content"], "x");

  auto error = [](const char* body) {
    ApiResult<TokenizeRequest> r = parse_tokenize_request(body, defaults());
    EXPECT_FALSE(r.is_ok()) << body;
    return r.is_ok() ? ApiError{} : r.error();
  };
  expect_bad_request(error("{}"), "prompt");
  expect_bad_request(error(R"({"prompt": 5})"), "prompt");
  expect_bad_request(error(R"({"content": ["x"]})"), "content");
  expect_bad_request(error(R"({"messages": []})"), "messages");
  EXPECT_EQ(error(R"({"model": "nope", "prompt": "x"})").http_status, 404);
}

TEST(OpenAiRequestTest, Detokenize) {
  ApiResult<DetokenizeRequest> r =
      parse_detokenize_request(R"({"model": "tiny", "tokens": [1, 2, 3]})", defaults());
  ASSERT_TRUE(r.is_ok());
  EXPECT_THAT(r.value().tokens, ElementsAre(1, 2, 3));
  for (const char* body :
       {"{}", R"({"tokens": "1"})", R"({"tokens": [-1]})", R"({"tokens": [1.5]})"}) {
    ApiResult<DetokenizeRequest> e = parse_detokenize_request(body, defaults());
    ASSERT_FALSE(e.is_ok()) << body;
    expect_bad_request(e.error(), "tokens");
  }
}

}  // namespace
}  // namespace tierserve

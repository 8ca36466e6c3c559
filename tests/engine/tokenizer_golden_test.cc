// Golden tests: the tokenizers under tests/tokenizer/data against the ids and texts that
// tests/tokenizer/reference.py computed with an independent implementation of Hugging Face's
// pipeline (and libsentencepiece's Python binding for tokenizer.model).
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer_golden_util.h"

namespace tierserve {
namespace {

const std::string kDataDir = TIERSERVE_TOKENIZER_DATA;

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesReference) {
  const std::string name = GetParam();
  auto tok = Tokenizer::load(kDataDir + "/" + name);
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  // Every encode case (each mismatch is reported there), every decode case and the 1 MiB text.
  const testing::GoldenDiff diff = testing::compare_with_golden(**tok, kDataDir, name);
  EXPECT_GT(diff.num_cases, 70);
  EXPECT_TRUE(diff.encode_texts.empty());
  for (const auto& d : diff.decodes) ADD_FAILURE() << name << ": decode differs: " << d.dump();
  EXPECT_TRUE(diff.big_matches) << name << ": the 1 MiB text's ids differ";
}

INSTANTIATE_TEST_SUITE_P(AllKinds, TokenizerGolden,
                         ::testing::Values("llama3", "qwen2", "gpt2", "sp_legacy", "sp_metaspace",
                                           "sentencepiece", "chatglm3", "glm4"));

}  // namespace
}  // namespace tierserve

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

namespace tierserve {
namespace {

const std::string kDataDir = TIERSERVE_TOKENIZER_DATA;

uint64_t fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int k = 0; k < 4; ++k) {
      h ^= (u >> (8 * k)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  }
  return h;
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesReference) {
  const std::string name = GetParam();
  auto tok = Tokenizer::load(kDataDir + "/" + name);
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  auto text = read_file(kDataDir + "/" + name + "_golden.json");
  ASSERT_TRUE(text.is_ok()) << text.status().to_string();
  const auto golden = nlohmann::json::parse(text.value());

  int num_cases = 0;
  for (const auto& c : golden["cases"]) {
    const std::string input = c["text"].get<std::string>();
    const bool add = c["add_special_tokens"].get<bool>();
    auto ids = (*tok)->encode(input, add);
    ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
    EXPECT_EQ(ids.value(), c["ids"].get<std::vector<int32_t>>())
        << name << ": \"" << input << "\" add_special_tokens=" << add;
    ++num_cases;
  }
  EXPECT_GT(num_cases, 70);

  for (const auto& d : golden["decode"]) {
    const auto ids = d["ids"].get<std::vector<int32_t>>();
    const bool skip = d["skip_special_tokens"].get<bool>();
    auto decoded = (*tok)->decode(ids, skip);
    ASSERT_TRUE(decoded.is_ok());
    EXPECT_EQ(decoded.value(), d["text"].get<std::string>())
        << name << ": decode " << d["ids"].dump() << " skip_special_tokens=" << skip;
  }

  // reference.py's big_text(): its CASES (the first num_base_cases texts; each text appears
  // twice, with and without special tokens) joined by newlines, repeated to at least 1 MiB.
  std::string joined;
  const size_t num_base = golden["num_base_cases"].get<size_t>();
  for (size_t i = 0; i < num_base; ++i) {
    const std::string t = golden["cases"][2 * i]["text"].get<std::string>();
    if (t.empty()) continue;
    if (!joined.empty()) joined += "\n";
    joined += t;
  }
  std::string big;
  while (big.size() < (size_t{1} << 20)) big += joined;
  auto ids = (*tok)->encode(big, true);
  ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
  EXPECT_EQ(ids->size(), golden["big"]["num_ids"].get<size_t>());
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(fnv1a64(*ids)));
  EXPECT_EQ(std::string(hash), golden["big"]["fnv1a64"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(AllKinds, TokenizerGolden,
                         ::testing::Values("llama3", "qwen2", "gpt2", "sp_legacy", "sp_metaspace",
                                           "sentencepiece", "chatglm3", "glm4"));

}  // namespace
}  // namespace tierserve

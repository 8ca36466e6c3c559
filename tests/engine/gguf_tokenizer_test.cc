// The tokenizer of a GGUF file (engine/tokenizer/gguf_tokenizer.h, Tokenizer::load_gguf).
//
// Golden: fixtures_make_gguf_tokenizers (tests/fixtures/make_gguf_tokenizers.py) writes GGUF files
// whose tokenizer metadata is that of the committed tokenizers in tests/tokenizer/data, as
// llama.cpp's converter would write it; each must give the ids and texts of that tokenizer's
// golden file. The few cases that cannot match are listed below with the reason, and the test
// checks that exactly those differ.
// Unit: small vocabularies built in memory (merge order from scores, BOS/EOS defaults, added
// tokens) and malformed metadata, each error naming the file and the key.
#include "engine/tokenizer/gguf_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/file.h"
#include "engine/gguf.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/tokenizer_golden_util.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::compare_with_golden;
using ::testing::ElementsAre;
using testing::GoldenDiff;
using ::testing::HasSubstr;
using testing::read_json;

const std::string kDataDir = TIERSERVE_TOKENIZER_DATA;
const std::string kGgufDir = TIERSERVE_GGUF_TOKENIZER_DIR;

std::unique_ptr<Tokenizer> load_fixture(const std::string& name) {
  auto tok = Tokenizer::load_gguf(kGgufDir + "/" + name + ".gguf");
  EXPECT_TRUE(tok.is_ok()) << tok.status().to_string();
  return tok.is_ok() ? std::move(tok).value() : nullptr;
}

// Runs `body` with failures from compare_with_golden() silenced, so that the test can say which
// differences it expects.
template <typename F>
GoldenDiff quietly(F body) {
  ::testing::TestPartResultArray failures;
  GoldenDiff diff;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    diff = body();
  }
  for (int i = 0; i < failures.size(); ++i) {
    const std::string message = failures.GetTestPartResult(i).message();
    if (message.find("golden mismatch: ") == std::string::npos) ADD_FAILURE() << message;
  }
  return diff;
}

// Byte-level files converted from tokenizer.json: every case must match.
class GgufByteLevelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufByteLevelGolden, MatchesTheOriginalTokenizer) {
  const auto tok = load_fixture(GetParam());
  ASSERT_NE(tok, nullptr);
  const GoldenDiff diff = compare_with_golden(*tok, kDataDir, GetParam());
  EXPECT_GT(diff.num_cases, 70);
  EXPECT_GT(diff.num_decodes, 20);
  EXPECT_TRUE(diff.encode_texts.empty());
  for (const json& d : diff.decodes) ADD_FAILURE() << "decode differs: " << d.dump();
  EXPECT_TRUE(diff.big_matches);
}

INSTANTIATE_TEST_SUITE_P(Files, GgufByteLevelGolden, ::testing::Values("llama3", "gpt2"));

// Qwen2's test tokenizer has added tokens with lstrip / rstrip / single_word / normalized flags,
// which GGUF cannot store (llama.cpp's converter keeps only the token type: control or
// user-defined), so these cases differ, by design:
//   "<|lstrip|>" / "<|rstrip|>": the spaces before / after the token stay in the text;
//   "x<word>y": single_word kept <word> from matching inside a word; now it matches;
//   "N\u0300ormalized ...": the user-defined "Ǹormalized" (normalized=true) matched the NFC form
//   of the decomposed text; as a raw token it matches only the precomposed spelling.
// Everything else, the 1 MiB text and every decode case included, must match.
TEST(GgufQwen2Golden, MatchesExceptTheAddedTokenFlagsGgufCannotStore) {
  const auto tok = load_fixture("qwen2");
  ASSERT_NE(tok, nullptr);
  const GoldenDiff diff = quietly([&] { return compare_with_golden(*tok, kDataDir, "qwen2"); });
  EXPECT_GT(diff.num_cases, 70);
  EXPECT_EQ(diff.encode_texts,
            (std::set<std::string>{"left   <|lstrip|>   right", "left   <|rstrip|>   right",
                                   "x<word>y", "N\u0300ormalized and \u01f8ormalized"}));
  for (const json& d : diff.decodes) ADD_FAILURE() << "decode differs: " << d.dump();
  EXPECT_TRUE(diff.big_matches);
}

// The "llama" (SentencePiece) file against transformers' conversion of the same tokenizer.model
// (sp_legacy: LlamaConverter's tokenizer.json, which is what transformers' GGUF loader rebuilds):
// every case must match.
TEST(GgufSentencePieceGolden, MatchesTransformersLlamaConversion) {
  const auto tok = load_fixture("sentencepiece");
  ASSERT_NE(tok, nullptr);
  const GoldenDiff diff = compare_with_golden(*tok, kDataDir, "sp_legacy");
  EXPECT_GT(diff.num_cases, 70);
  EXPECT_TRUE(diff.encode_texts.empty());
  for (const json& d : diff.decodes) ADD_FAILURE() << "decode differs: " << d.dump();
  EXPECT_TRUE(diff.big_matches);
}

// ... and against libsentencepiece itself (the sentencepiece golden file): every encode case and
// the 1 MiB text match (the merges derived from the scores reproduce SentencePiece's BPE here).
// Decoding with skip_special_tokens=false differs by design where a special token precedes text:
// the slow tokenizer decodes each run between special tokens separately and SentencePiece drops
// the run's leading space ("<s>Hello"), while a tokenizer.json decoder (and llama.cpp) strips
// only the first space of the whole text ("<s> Hello"). Such a case must differ by exactly those
// spaces; everything else must match.
TEST(GgufSentencePieceGolden, MatchesLibSentencePieceExceptSpacesAfterSpecialTokens) {
  const auto tok = load_fixture("sentencepiece");
  ASSERT_NE(tok, nullptr);
  const GoldenDiff diff =
      quietly([&] { return compare_with_golden(*tok, kDataDir, "sentencepiece"); });
  EXPECT_GT(diff.num_cases, 70);
  EXPECT_TRUE(diff.encode_texts.empty());
  EXPECT_TRUE(diff.big_matches);
  int num_space_after_special = 0;
  for (const json& d : diff.decodes) {
    std::string got = d["got"].get<std::string>();
    for (const std::string special : {"<s>", "</s>", "<unk>"}) {
      for (size_t pos = 0; (pos = got.find(special + " ", pos)) != std::string::npos;) {
        got.erase(pos + special.size(), 1);
        pos += special.size();
      }
    }
    if (!d["skip_special_tokens"].get<bool>() && got == d["text"].get<std::string>()) {
      ++num_space_after_special;
    } else {
      ADD_FAILURE() << "decode differs: " << d.dump();
    }
  }
  EXPECT_EQ(num_space_after_special, 12);  // the 12 decode inputs that start with <s>
}

// The special tokens, the end-of-generation ids and the chat template each file was written with
// (<name>.json, from the generator), read back through Tokenizer::load's .gguf dispatch.
TEST(GgufTokenizerFiles, SpecialTokensAndChatTemplate) {
  for (const std::string name : {"llama3", "qwen2", "gpt2", "sentencepiece"}) {
    SCOPED_TRACE(name);
    const std::string path = kGgufDir + "/" + name + ".gguf";
    const json expected = read_json(kGgufDir + "/" + name + ".json");
    auto tok = Tokenizer::load(path);
    ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
    const SpecialTokens& special = (*tok)->special_tokens();
    const auto id_or_null = [](const std::optional<int32_t>& id) {
      return id ? json(*id) : json();
    };
    EXPECT_EQ(id_or_null(special.bos_id), expected["bos_id"]);
    EXPECT_EQ(id_or_null(special.pad_id), expected["pad_id"]);
    ASSERT_FALSE(special.eos_ids.empty());
    EXPECT_EQ(special.eos_ids[0], expected["eos_id"].get<int32_t>());
    EXPECT_EQ(special.eos_token, (*tok)->id_to_piece(special.eos_ids[0]));
    if (special.bos_id) {
      EXPECT_EQ(special.bos_token, (*tok)->id_to_piece(*special.bos_id));
    }
    auto tmpl = tokenizer::gguf_chat_template(fs::path(path));
    ASSERT_TRUE(tmpl.is_ok()) << tmpl.status().to_string();
    EXPECT_EQ(tmpl->has_value() ? json(**tmpl) : json(), expected["chat_template"]);
  }
  // End of generation: eos, then the control tokens with end-of-turn texts.
  EXPECT_THAT(load_fixture("llama3")->special_tokens().eos_ids, ElementsAre(1760, 1757));
  EXPECT_THAT(load_fixture("qwen2")->special_tokens().eos_ids, ElementsAre(1758, 1756));
  EXPECT_THAT(load_fixture("gpt2")->special_tokens().eos_ids, ElementsAre(1256));
  EXPECT_THAT(load_fixture("sentencepiece")->special_tokens().eos_ids, ElementsAre(2));
  EXPECT_EQ(load_fixture("sentencepiece")->special_tokens().unk_token, "<unk>");
}

// ---- Metadata built in memory ----------------------------------------------------------------

GgufValue str(std::string s) {
  return GgufValue(GgufValueType::kString, GgufValueType::kU8, std::move(s));
}
GgufValue strs(std::vector<std::string> v) {
  return GgufValue(GgufValueType::kArray, GgufValueType::kString, std::move(v));
}
GgufValue f32s(std::vector<double> v) {
  return GgufValue(GgufValueType::kArray, GgufValueType::kF32, std::move(v));
}
GgufValue i32s(std::vector<int64_t> v) {
  return GgufValue(GgufValueType::kArray, GgufValueType::kI32, std::move(v));
}
GgufValue u32(uint64_t v) { return GgufValue(GgufValueType::kU32, GgufValueType::kU8, v); }
GgufValue i32(int64_t v) { return GgufValue(GgufValueType::kI32, GgufValueType::kU8, v); }
GgufValue boolean(bool v) { return GgufValue(GgufValueType::kBool, GgufValueType::kU8, v); }

// Metadata under construction: set() adds or replaces a key, erase() drops one.
struct Meta {
  std::vector<GgufKeyValue> kvs;
  Meta& set(const std::string& key, GgufValue value) {
    erase(key);
    kvs.push_back({key, std::move(value)});
    return *this;
  }
  Meta& erase(const std::string& key) {
    std::erase_if(kvs, [&](const GgufKeyValue& kv) { return kv.key == key; });
    return *this;
  }
  GgufContents contents() const {
    GgufContents c;
    c.file_name = "bad.gguf";
    for (const auto& kv : kvs) {
      c.keys[kv.key] = c.metadata.size();
      c.metadata.push_back(kv);
    }
    return c;
  }
};

// A SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte pieces, then `pieces` with
// decreasing scores (the first scores highest), and a user-defined "<tool>".
Meta llama_meta(const std::vector<std::string>& pieces) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<double> scores = {0, 0, 0};
  std::vector<int64_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    tokens.push_back(name);
    scores.push_back(0);
    types.push_back(6);
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    tokens.push_back(pieces[i]);
    scores.push_back(-static_cast<double>(i));
    types.push_back(1);
  }
  tokens.push_back("<tool>");
  scores.push_back(0);
  types.push_back(4);
  Meta m;
  m.set("tokenizer.ggml.model", str("llama"))
      .set("tokenizer.ggml.tokens", strs(tokens))
      .set("tokenizer.ggml.scores", f32s(scores))
      .set("tokenizer.ggml.token_type", i32s(types))
      .set("tokenizer.ggml.bos_token_id", u32(1))
      .set("tokenizer.ggml.eos_token_id", u32(2))
      .set("tokenizer.ggml.unknown_token_id", u32(0));
  return m;
}

// A byte-level vocabulary: the 256 bytes (GPT-2's unicode form), "Ġa", "ab", two control tokens
// and "xyz", which no merge makes.
Meta gpt2_meta() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(tokenizer::byte_to_unicode_utf8(uint8_t(b)));
  tokens.push_back(
      "\xc4\xa0"
      "a");  // "Ġa"
  tokens.push_back("ab");
  tokens.push_back("<|bos|>");
  tokens.push_back("<|eos|>");
  tokens.push_back("xyz");  // no merge makes it
  std::vector<int64_t> types(tokens.size(), 1);
  types[258] = types[259] = 3;
  Meta m;
  m.set("tokenizer.ggml.model", str("gpt2"))
      .set("tokenizer.ggml.tokens", strs(tokens))
      .set("tokenizer.ggml.token_type", i32s(types))
      .set("tokenizer.ggml.merges", strs({"\xc4\xa0 a", "a b"}))
      .set("tokenizer.ggml.bos_token_id", u32(258))
      .set("tokenizer.ggml.eos_token_id", u32(259));
  return m;
}

std::vector<int32_t> encode(const Meta& m, const std::string& text, bool add_special = true) {
  auto tok = Tokenizer::from_gguf(m.contents());
  EXPECT_TRUE(tok.is_ok()) << tok.status().to_string();
  if (!tok.is_ok()) return {};
  auto ids = (*tok)->encode(text, add_special);
  EXPECT_TRUE(ids.is_ok()) << ids.status().to_string();
  return ids.is_ok() ? *ids : std::vector<int32_t>();
}

constexpr int32_t kFirstPiece = 3 + 256;  // id of llama_meta's first piece

TEST(GgufLlamaVocab, MergesFollowTheScores) {
  // "▁" "a" "b" are pieces 0-2; then "ab" before "▁a", or the other way round.
  const std::string s = "\xe2\x96\x81";
  EXPECT_THAT(encode(llama_meta({s, "a", "b", "ab", s + "a"}), "ab", false),
              ElementsAre(kFirstPiece, kFirstPiece + 3));  // ▁ ab
  EXPECT_THAT(encode(llama_meta({s, "a", "b", s + "a", "ab"}), "ab", false),
              ElementsAre(kFirstPiece + 3, kFirstPiece + 2));  // ▁a b
}

TEST(GgufLlamaVocab, BosByDefaultSpecialAndUserDefinedTokensByteFallback) {
  const std::string s = "\xe2\x96\x81";
  const Meta m = llama_meta({s, "a", "b"});
  const int32_t tool = kFirstPiece + 3;
  // BOS by default; "<s>" in text is the control token; "<tool>" (user-defined) matches too;
  // "c" is not a piece: byte fallback.
  // The normalizer prepends "▁" to each segment between added tokens, as tokenizers does.
  EXPECT_THAT(encode(m, "a<s><tool>c"),
              ElementsAre(1, kFirstPiece, kFirstPiece + 1, 1, tool, kFirstPiece, 3 + 0x63));
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.add_bos_token", boolean(false)), "a"),
              ElementsAre(kFirstPiece, kFirstPiece + 1));
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.add_eos_token", boolean(true)), "a"),
              ElementsAre(1, kFirstPiece, kFirstPiece + 1, 2));
  // Without a space prefix "a" is just "a".
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.add_space_prefix", boolean(false)), "a", false),
              ElementsAre(kFirstPiece + 1));

  auto tok = Tokenizer::from_gguf(m.contents());
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  EXPECT_TRUE((*tok)->is_special(1));
  EXPECT_TRUE((*tok)->is_special(0));  // the unknown token
  EXPECT_FALSE((*tok)->is_special(tool));
  const std::vector<int32_t> ids = {1, kFirstPiece, kFirstPiece + 1, tool, 3 + 0xC3, 3 + 0xA9};
  EXPECT_EQ((*tok)->decode(ids).value(), "<s> a<tool>\xc3\xa9");
  EXPECT_EQ((*tok)->decode(ids, /*skip_special_tokens=*/true).value(), "a<tool>\xc3\xa9");
  EXPECT_EQ((*tok)->special_tokens().bos_token, "<s>");
  EXPECT_EQ((*tok)->special_tokens().unk_token, "<unk>");
}

TEST(GgufGpt2Vocab, PreTokenizerAndBosDefaults) {
  const Meta m = gpt2_meta();
  EXPECT_THAT(encode(m, "ab a"), ElementsAre(257, 256));  // no BOS by default; "ab" "Ġa"
  // llama.cpp adds BOS by default for the Llama-3 pre-tokenizers...
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.pre", str("llama-bpe")), "ab"),
              ElementsAre(258, 257));
  // ... unless the file says otherwise.
  EXPECT_THAT(encode(Meta(m)
                         .set("tokenizer.ggml.pre", str("llama-bpe"))
                         .set("tokenizer.ggml.add_bos_token", boolean(false)),
                     "ab"),
              ElementsAre(257));
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.pre", str("qwen2")), "<|eos|>a"),
              ElementsAre(259, 0x61));  // the control token, then byte 0x61
  // llama.cpp takes a Llama-3 pre-token that is a token whole (tokenizers' ignore_merges); the
  // other pre-tokenizers go through the merges.
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.pre", str("llama-bpe")), "xyz", false),
              ElementsAre(260));
  EXPECT_THAT(encode(Meta(m).set("tokenizer.ggml.pre", str("qwen2")), "xyz", false),
              ElementsAre('x', 'y', 'z'));
  EXPECT_THAT(encode(m, "xyz", false), ElementsAre('x', 'y', 'z'));
  // Llama 3 splits digits in threes, Qwen2 one by one, GPT-2 not at all (no merges for digits
  // here, so the pieces show as bytes either way): checks the patterns are accepted.
  EXPECT_EQ(encode(Meta(m).set("tokenizer.ggml.pre", str("llama3")), "1234", false).size(), 4u);
  EXPECT_EQ(encode(Meta(m).set("tokenizer.ggml.pre", str("default")), "1234", false).size(), 4u);
}

// ---- Errors ------------------------------------------------------------------------------------

Status error_of(const Meta& m) {
  auto tok = Tokenizer::from_gguf(m.contents());
  return tok.is_ok() ? Status::ok() : tok.status();
}

void expect_error(const Meta& m, StatusCode code, const std::string& key,
                  const std::string& detail) {
  const Status s = error_of(m);
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_THAT(s.message(), HasSubstr("bad.gguf"));
  EXPECT_THAT(s.message(), HasSubstr(key));
  EXPECT_THAT(s.message(), HasSubstr(detail));
}

TEST(GgufTokenizerErrors, ModelAndTokens) {
  const Meta good = llama_meta({"a"});
  ASSERT_TRUE(error_of(good).is_ok()) << error_of(good).to_string();
  expect_error(Meta(good).erase("tokenizer.ggml.model"), StatusCode::kNotFound,
               "tokenizer.ggml.model", "not found");
  expect_error(Meta(good).set("tokenizer.ggml.model", str("bert")), StatusCode::kUnimplemented,
               "tokenizer.ggml.model", "'bert'");
  expect_error(Meta(good).set("tokenizer.ggml.model", u32(1)), StatusCode::kDataLoss,
               "tokenizer.ggml.model", "expected string");
  expect_error(Meta(good).erase("tokenizer.ggml.tokens"), StatusCode::kNotFound,
               "tokenizer.ggml.tokens", "not found");
  expect_error(Meta(good).set("tokenizer.ggml.tokens", i32s({1, 2})), StatusCode::kDataLoss,
               "tokenizer.ggml.tokens", "expected array of string");
  expect_error(Meta(good).set("tokenizer.ggml.tokens", strs({})), StatusCode::kDataLoss,
               "tokenizer.ggml.tokens", "empty");
  Meta bad_utf8 = good;
  auto tokens = *good.contents().find("tokenizer.ggml.tokens")->strings();
  tokens[5] = "\xff";
  expect_error(bad_utf8.set("tokenizer.ggml.tokens", strs(tokens)), StatusCode::kDataLoss,
               "tokenizer.ggml.tokens", "token 5 is not valid UTF-8");
}

TEST(GgufTokenizerErrors, ArraysOfDifferentLengths) {
  const Meta good = llama_meta({"a"});
  expect_error(Meta(good).set("tokenizer.ggml.scores", f32s({0, 0})), StatusCode::kDataLoss,
               "tokenizer.ggml.scores", "2 entries, but tokenizer.ggml.tokens has 261");
  expect_error(Meta(good).set("tokenizer.ggml.token_type", i32s({1})), StatusCode::kDataLoss,
               "tokenizer.ggml.token_type", "1 entries, but tokenizer.ggml.tokens has 261");
  std::vector<double> scores(261, 0.0);
  scores[7] = std::nan("");
  expect_error(Meta(good).set("tokenizer.ggml.scores", f32s(scores)), StatusCode::kDataLoss,
               "tokenizer.ggml.scores", "token 7 is not finite");
  std::vector<int64_t> types(261, 1);
  types[3] = 9;
  expect_error(Meta(good).set("tokenizer.ggml.token_type", i32s(types)), StatusCode::kDataLoss,
               "tokenizer.ggml.token_type", "token 3 has type 9");
  expect_error(Meta(good).erase("tokenizer.ggml.scores"), StatusCode::kNotFound,
               "tokenizer.ggml.scores", "not found");
}

TEST(GgufTokenizerErrors, TokenIds) {
  const Meta good = llama_meta({"a"});
  expect_error(Meta(good).set("tokenizer.ggml.bos_token_id", u32(261)), StatusCode::kDataLoss,
               "tokenizer.ggml.bos_token_id", "token id 261 is outside the vocabulary of 261");
  expect_error(Meta(good).set("tokenizer.ggml.eos_token_id", i32(-1)), StatusCode::kDataLoss,
               "tokenizer.ggml.eos_token_id", "token id -1 is outside");
  expect_error(Meta(good).set("tokenizer.ggml.padding_token_id", str("0")), StatusCode::kDataLoss,
               "tokenizer.ggml.padding_token_id", "expected a token id");
  expect_error(Meta(good)
                   .erase("tokenizer.ggml.bos_token_id")
                   .set("tokenizer.ggml.add_bos_token", boolean(true)),
               StatusCode::kDataLoss, "tokenizer.ggml.add_bos_token", "no tokenizer.ggml.bos");
  // Without the key, the default BOS is simply not added when there is none.
  EXPECT_THAT(encode(Meta(good)
                         .erase("tokenizer.ggml.bos_token_id")
                         .set("tokenizer.ggml.add_space_prefix", boolean(false)),
                     "a"),
              ElementsAre(kFirstPiece));
}

TEST(GgufTokenizerErrors, MergesAndPreTokenizer) {
  const Meta good = gpt2_meta();
  ASSERT_TRUE(error_of(good).is_ok()) << error_of(good).to_string();
  expect_error(Meta(good).erase("tokenizer.ggml.merges"), StatusCode::kNotFound,
               "tokenizer.ggml.merges", "not found");
  expect_error(Meta(good).set("tokenizer.ggml.merges", strs({"ab"})), StatusCode::kDataLoss,
               "tokenizer.ggml.merges", "merge 0 ('ab') is not two tokens");
  expect_error(Meta(good).set("tokenizer.ggml.merges", strs({"a b", "x  y"})),
               StatusCode::kDataLoss, "tokenizer.ggml.merges", "merge 1");
  // A merge of tokens the vocabulary lacks: HfTokenizer's error, naming the file.
  expect_error(Meta(good).set("tokenizer.ggml.merges", strs({"a zz"})), StatusCode::kDataLoss,
               "bad.gguf", "missing from the vocab");
  expect_error(Meta(good).set("tokenizer.ggml.pre", str("starcoder")), StatusCode::kUnimplemented,
               "tokenizer.ggml.pre", "'starcoder'");
  expect_error(Meta(good).set("tokenizer.ggml.pre", u32(3)), StatusCode::kDataLoss,
               "tokenizer.ggml.pre", "expected string");
}

TEST(GgufTokenizerErrors, ChatTemplateAndFiles) {
  Meta m = gpt2_meta();
  auto none = tokenizer::gguf_chat_template(m.contents());
  ASSERT_TRUE(none.is_ok());
  EXPECT_FALSE(none->has_value());
  m.set("tokenizer.chat_template", u32(1));
  auto bad = tokenizer::gguf_chat_template(m.contents());
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("tokenizer.chat_template"));

  const fs::path dir = fs::path(::testing::TempDir()) / "gguf_tokenizer_test";
  fs::create_directories(dir);
  auto missing = Tokenizer::load_gguf(dir / "missing.gguf");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing.gguf"));
  const fs::path not_gguf = dir / "not.gguf";
  std::ofstream(not_gguf) << "{\"this\": \"is JSON\"}";
  auto bad_file = Tokenizer::load(not_gguf);  // dispatched on the name
  ASSERT_FALSE(bad_file.is_ok());
  EXPECT_EQ(bad_file.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(bad_file.status().message(), HasSubstr("not.gguf"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tierserve

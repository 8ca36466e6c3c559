// Unit tests of the tokenizer pieces: UTF-8 handling, the Split scanners, BPE options, errors and
// the special tokens read from the configuration files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/file.h"
#include "engine/tokenizer/hf_tokenizer.h"
#include "engine/tokenizer/split_scanner.h"
#include "engine/tokenizer/tiktoken_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using tokenizer::find_split_pattern;
using tokenizer::HfTokenizer;

const std::string kDataDir = TIERSERVE_TOKENIZER_DATA;

const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> split(const tokenizer::SplitPattern& p, const std::string& text) {
  std::vector<std::pair<size_t, size_t>> ranges;
  tokenizer::scan_split_pattern(p, text, &ranges);
  std::vector<std::string> out;
  for (auto [b, e] : ranges) out.push_back(text.substr(b, e - b));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Utf8, ValidationNamesTheByteOffset) {
  EXPECT_TRUE(tokenizer::validate_utf8("héllo 日本 😀").is_ok());
  const auto bad = tokenizer::validate_utf8("ab\xff");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("byte offset 2"), std::string::npos) << bad.message();
  EXPECT_NE(tokenizer::validate_utf8("x\xe6\x97").message().find("offset 1"), std::string::npos);
  EXPECT_FALSE(tokenizer::validate_utf8("\xed\xa0\x80").is_ok());      // a surrogate
  EXPECT_FALSE(tokenizer::validate_utf8("\xc0\xaf").is_ok());          // an overlong '/'
  EXPECT_FALSE(tokenizer::validate_utf8("\xf4\x90\x80\x80").is_ok());  // above U+10FFFF
}

TEST(Utf8, LossyMatchesRust) {
  EXPECT_EQ(tokenizer::utf8_lossy("a\xe6\x97z"), "a\xEF\xBF\xBDz");  // one U+FFFD per subpart
  EXPECT_EQ(tokenizer::utf8_lossy("\xff\xfe"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer::utf8_lossy("\xf0\x9f\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer::utf8_lossy("ok 😀"), "ok 😀");
}

TEST(SplitScanner, KnownPatternsOnly) {
  EXPECT_TRUE(find_split_pattern(kLlama3).has_value());
  EXPECT_FALSE(find_split_pattern(R"(\p{N}+|[a-z]+)").has_value());
}

TEST(SplitScanner, MatchesTheRegexes) {  // expected values from Python's `regex` module
  const auto llama3 = *find_split_pattern(kLlama3);
  EXPECT_EQ(split(llama3, "\n\n  \n"), Pieces({"\n\n  \n"}));
  EXPECT_EQ(split(llama3, "DON'T it's 12345"),
            Pieces({"DON", "'T", " it", "'s", " ", "123", "45"}));
  EXPECT_EQ(split(llama3, "  hi  there\t\n x"), Pieces({" ", " hi", " ", " there", "\t\n", " x"}));
  EXPECT_EQ(split(llama3, "!!  ,a"), Pieces({"!!", " ", " ,", "a"}));
  const auto gpt2 = tokenizer::gpt2_split_pattern();
  EXPECT_EQ(split(gpt2, "DON'T it's 12345"), Pieces({"DON", "'", "T", " it", "'s", " 12345"}));
}

TEST(Tokenizer, InvalidUtf8IsAClearError) {
  auto tok = Tokenizer::load(kDataDir + "/llama3");
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  auto ids = (*tok)->encode("fine text \x80 then", true);
  ASSERT_FALSE(ids.is_ok());
  EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("byte offset 10"), std::string::npos)
      << ids.status().message();
}

TEST(Tokenizer, MissingFilesAreNamed) {
  auto tok = Tokenizer::load(kDataDir + "/no_such_model");
  ASSERT_FALSE(tok.is_ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("no_such_model"), std::string::npos);
}

TEST(Tokenizer, UnsupportedRegexIsNamed) {
  auto text = read_file(kDataDir + "/llama3/tokenizer.json");
  ASSERT_TRUE(text.is_ok());
  std::string json = text.value();
  const std::string from = R"(\\p{N}{1,3})";
  const size_t at = json.find(from);
  ASSERT_NE(at, std::string::npos);
  json.replace(at, from.size(), R"(\\p{N}{1,4})");
  auto tok = HfTokenizer::parse(json, "custom/tokenizer.json");
  ASSERT_FALSE(tok.is_ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(tok.status().message().find("custom/tokenizer.json"), std::string::npos);
  EXPECT_NE(tok.status().message().find(R"(\p{N}{1,4})"), std::string::npos)
      << tok.status().message();
}

// A tiny byte-free BPE where "abc" is in the vocab but no merge makes it.
std::string tiny_bpe(bool ignore_merges) {
  return std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3,
      "abc": 4, "<unk>": 5, "<0x21>": 6}, "merges": [["a", "b"]], "unk_token": "<unk>",
      "fuse_unk": true, "byte_fallback": true, "ignore_merges": )") +
         (ignore_merges ? "true" : "false") + "}}";
}

TEST(BpeModel, IgnoreMergesUsesWholeVocabWords) {
  auto plain = HfTokenizer::parse(tiny_bpe(false), "tiny");
  auto ignore = HfTokenizer::parse(tiny_bpe(true), "tiny");
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  ASSERT_TRUE(ignore.is_ok()) << ignore.status().to_string();
  EXPECT_EQ((*plain)->encode("abc", false).value(), std::vector<int32_t>({3, 2}));
  EXPECT_EQ((*ignore)->encode("abc", false).value(), std::vector<int32_t>({4}));
}

TEST(BpeModel, ByteFallbackAndFusedUnk) {
  auto tok = HfTokenizer::parse(tiny_bpe(false), "tiny");
  ASSERT_TRUE(tok.is_ok());
  // '!' has a byte token; 'x' and 'y' have none and fuse into one <unk>.
  EXPECT_EQ((*tok)->encode("a!xyb", false).value(), std::vector<int32_t>({0, 6, 5, 1}));
}

// A SentencePiece-style BPE (no pre-tokenizer: the whole text is one word); `extra` adds vocab
// entries and merges that come first.
std::string metaspace_bpe(const std::string& extra_vocab, const std::string& extra_merges) {
  return R"({"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3, "▁▁": 4,
      "ab": 5, "▁ab": 6)" +
         extra_vocab + R"(}, "merges": [)" + extra_merges +
         R"(["▁", "a"], ["▁", "▁"], ["a", "b"], ["▁a", "b"]]}})";
}

TEST(BpeModel, MetaspaceRunsMergeLikeTheWholeWord) {
  // No token has "▁" after another character, so the word is merged from each "▁"-run on (for
  // speed); the result must be the whole word's.
  auto tok = HfTokenizer::parse(metaspace_bpe("", ""), "metaspace");
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  EXPECT_EQ((*tok)->encode("▁ab▁▁a", false).value(), std::vector<int32_t>({6, 0, 3}));
  EXPECT_EQ((*tok)->encode("b▁▁ab▁", false).value(), std::vector<int32_t>({2, 0, 6, 0}));
  // "b▁" spans a run start: the word must be merged whole ([6, 3] if it were split).
  auto spanning = HfTokenizer::parse(metaspace_bpe(R"(, "b▁": 7)", R"(["b", "▁"], )"), "spanning");
  ASSERT_TRUE(spanning.is_ok()) << spanning.status().to_string();
  EXPECT_EQ((*spanning)->encode("▁ab▁a", false).value(), std::vector<int32_t>({3, 7, 1}));
}

TEST(Tokenizer, SpecialTokensFromConfigFiles) {
  auto llama = Tokenizer::load(kDataDir + "/llama3");
  ASSERT_TRUE(llama.is_ok());
  const SpecialTokens& s = (*llama)->special_tokens();
  const auto bos = (*llama)->piece_to_id("<|begin_of_text|>");
  ASSERT_TRUE(bos.has_value());
  EXPECT_EQ(s.bos_id, bos);
  EXPECT_EQ(s.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(s.eos_token, "<|eot_id|>");
  // generation_config.json's list: <|end_of_text|> and <|eot_id|>.
  EXPECT_EQ(s.eos_ids, std::vector<int32_t>({*bos + 1, *bos + 4}));
  EXPECT_TRUE((*llama)->is_special(*bos));
  EXPECT_TRUE((*llama)->is_eos(*bos + 4));

  auto qwen = Tokenizer::load(kDataDir + "/qwen2");
  ASSERT_TRUE(qwen.is_ok());
  const auto endoftext = (*qwen)->piece_to_id("<|endoftext|>");
  const auto im_end = (*qwen)->piece_to_id("<|im_end|>");
  ASSERT_TRUE(endoftext && im_end);
  EXPECT_EQ((*qwen)->special_tokens().eos_ids, std::vector<int32_t>({*endoftext, *im_end}));
  EXPECT_FALSE((*qwen)->special_tokens().bos_id.has_value());
  EXPECT_EQ((*qwen)->special_tokens().pad_id, endoftext);
  EXPECT_FALSE((*qwen)->is_special(*(*qwen)->piece_to_id("<tool_call>")));

  auto sp = Tokenizer::load(kDataDir + "/sentencepiece");
  ASSERT_TRUE(sp.is_ok()) << sp.status().to_string();
  EXPECT_EQ((*sp)->special_tokens().bos_id, 1);
  EXPECT_EQ((*sp)->special_tokens().eos_ids, std::vector<int32_t>({2}));
}

TEST(Tokenizer, DecodeRoundTripsByteLevel) {
  for (const char* name : {"llama3", "qwen2", "gpt2"}) {
    auto tok = Tokenizer::load(kDataDir + "/" + name);
    ASSERT_TRUE(tok.is_ok());
    const std::string text = "Round trip:\n\t 日本語 😀 DON'T 12345  ";
    auto ids = (*tok)->encode(text, false);
    ASSERT_TRUE(ids.is_ok());
    EXPECT_EQ((*tok)->decode(*ids).value(), text) << name;
  }
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  auto tok = Tokenizer::load(kDataDir + "/llama3");
  ASSERT_TRUE(tok.is_ok());
  std::string text;
  for (int i = 0; i < 200; ++i) text += "word" + std::to_string(i) + " and more text, ";
  const auto expected = (*tok)->encode(text).value();
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool same = true;
      for (int k = 0; k < 20; ++k) same = same && (*tok)->encode(text).value() == expected;
      ok[t] = same;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
}

// A tiktoken file of the 256 single bytes (rank = byte) plus `extra` lines.
std::string tiktoken_bytes(const std::string& extra = "") {
  static const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text;
  for (int b = 0; b < 256; ++b) {
    text +=
        std::string{kB64[b >> 2], kB64[(b & 3) << 4], '=', '='} + " " + std::to_string(b) + "\n";
  }
  return text + extra;
}

TEST(TiktokenFileTest, ConvertsRanksToMergesAndEncodesLikeTiktoken) {
  EXPECT_TRUE(tokenizer::looks_like_tiktoken("IQ== 0\nIg== 1\n"));
  EXPECT_FALSE(tokenizer::looks_like_tiktoken("\n\x0a\x05<unk>"));
  // "ab" (256), "bc" (257), "abc" (258): "abcd" pre-tokenizes whole; tiktoken merges ab first
  // (rank 256 < 257), then ab+c (258), leaving d.
  auto json = tokenizer::tiktoken_to_tokenizer_json(
      tiktoken_bytes("YWI= 256\nYmM= 257\nYWJj 258\n"), "tokenizer.model",
      tokenizer::kGlm4SplitPattern, nlohmann::json::array());
  ASSERT_TRUE(json.is_ok()) << json.status().to_string();
  auto tok = tokenizer::HfTokenizer::parse(json.value(), "converted");
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  auto ids = tok.value()->encode("abcd", false);
  ASSERT_TRUE(ids.is_ok());
  EXPECT_EQ(ids.value(), (std::vector<int32_t>{258, 'd'}));
  EXPECT_EQ(tok.value()->decode(ids.value(), false), "abcd");
}

TEST(TiktokenFileTest, RejectsMalformedFilesNamingTheLine) {
  struct Case {
    std::string text, fragment;
  };
  const Case cases[] = {
      {tiktoken_bytes("Y*I= 256\n"), "tokenizer.model:257: malformed base64"},
      {tiktoken_bytes("YWI= x\n"), "tokenizer.model:257: bad rank 'x'"},
      {tiktoken_bytes("YWI= 5\n"), "tokenizer.model:257: rank 5 given twice"},
      {tiktoken_bytes("YWI= 300\n"), "no token has rank 256"},
      {tiktoken_bytes("YWI= 256\nYWI= 257\n"), "tokenizer.model:258: token given twice"},
      {tiktoken_bytes("YWI=256\n"), "expected '<base64> <rank>'"},
      {"YWI= 0\n", "byte 0 has no token"},
  };
  for (const Case& c : cases) {
    auto json = tokenizer::tiktoken_to_tokenizer_json(
        c.text, "tokenizer.model", tokenizer::kGlm4SplitPattern, nlohmann::json::array());
    ASSERT_FALSE(json.is_ok()) << c.fragment;
    EXPECT_EQ(json.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(json.status().message().find(c.fragment), std::string::npos)
        << json.status().message();
  }
}

}  // namespace
}  // namespace tierserve

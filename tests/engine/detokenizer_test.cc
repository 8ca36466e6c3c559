#include "engine/detokenizer.h"

#include <gtest/gtest.h>

#include <map>

namespace tierserve {
namespace {

// Python's bytes.decode("utf-8", errors="replace") for the cases these tests need: a truncated
// sequence at the end becomes one U+FFFD.
std::string decode_replace(const std::string& bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > bytes.size()) {
      out += "\xEF\xBF\xBD";
      i += len == 0 ? 1 : bytes.size() - i;
      continue;
    }
    out.append(bytes, i, len);
    i += len;
  }
  return out;
}

bool valid_utf8(const std::string& s) { return decode_replace(s) == s; }

// A byte-level vocabulary: token i is the single byte i.
DecodeFn byte_decoder() {
  return [](const std::vector<int32_t>& ids, size_t b, size_t e) {
    std::string bytes;
    for (size_t i = b; i < e; ++i) bytes += static_cast<char>(ids[i]);
    return decode_replace(bytes);
  };
}

// A SentencePiece-like vocabulary: "▁" is a space, and decode drops the leading space of the
// first piece, as Hugging Face's Metaspace decoder does.
DecodeFn piece_decoder(const std::map<int32_t, std::string>& pieces) {
  return [pieces](const std::vector<int32_t>& ids, size_t b, size_t e) {
    std::string s;
    for (size_t i = b; i < e; ++i) s += pieces.at(ids[i]);
    std::string out;
    for (size_t i = 0; i < s.size();) {
      if (s.compare(i, 3, "\xE2\x96\x81") == 0) {
        out += ' ';
        i += 3;
      } else {
        out += s[i++];
      }
    }
    if (!out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  };
}

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

TEST(DetokenizerTest, NeverEmitsAPartialCharacter) {
  const std::string text = "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE4\xB8\xAD!";  // héllo 😀 中!
  StreamingDetokenizer d(byte_decoder(), bytes_of("prompt "), {});
  std::string streamed;
  for (int32_t id : bytes_of(text)) {
    std::string piece = d.add(id);
    EXPECT_TRUE(valid_utf8(piece)) << piece;
    streamed += piece;
  }
  streamed += d.finish();
  EXPECT_EQ(streamed, text);
}

TEST(DetokenizerTest, AnIncompleteTailBecomesReplacementCharAtFinish) {
  StreamingDetokenizer d(byte_decoder(), {}, {});
  EXPECT_EQ(d.add('a'), "a");
  EXPECT_EQ(d.add(0xF0), "");
  EXPECT_EQ(d.add(0x9F), "");
  EXPECT_EQ(d.finish(), "\xEF\xBF\xBD");
}

TEST(DetokenizerTest, SentencePieceLeadingSpaceFollowsTheWholeDecode) {
  const std::map<int32_t, std::string> pieces = {
      {1, "\xE2\x96\x81Hi"}, {2, "\xE2\x96\x81there"}, {3, "!"}, {4, "\xE2\x96\x81you"}};
  StreamingDetokenizer d(piece_decoder(pieces), {1}, {});
  // decode([Hi, there, !, you]) = "Hi there! you"; the output is what follows "Hi".
  std::string out = d.add(2);
  out += d.add(3);
  out += d.add(4);
  out += d.finish();
  EXPECT_EQ(out, " there! you");
}

TEST(DetokenizerTest, StopStringAcrossTokensIsCutAndNeverLeaks) {
  std::map<int32_t, std::string> pieces = {{1, "ab"}, {2, "c<"}, {3, "/s"}, {4, ">tail"}};
  StreamingDetokenizer d(piece_decoder(pieces), {}, {"</s>"});
  EXPECT_EQ(d.add(1), "ab");
  EXPECT_EQ(d.add(2), "c");  // "<" could begin "</s>": held back
  EXPECT_EQ(d.add(3), "");
  EXPECT_FALSE(d.stopped());
  EXPECT_EQ(d.add(4), "");
  EXPECT_TRUE(d.stopped());
  EXPECT_EQ(d.text(), "abc");
  EXPECT_EQ(d.add(1), "");
  EXPECT_EQ(d.finish(), "");
}

TEST(DetokenizerTest, HeldBackPrefixIsReleasedWhenItCannotMatch) {
  std::map<int32_t, std::string> pieces = {{1, "x<"}, {2, "/"}, {3, "y"}};
  StreamingDetokenizer d(piece_decoder(pieces), {}, {"</s>", "STOP"});
  EXPECT_EQ(d.add(1), "x");
  EXPECT_EQ(d.add(2), "");
  EXPECT_EQ(d.add(3), "</y");
  EXPECT_FALSE(d.stopped());
  EXPECT_EQ(d.add(1), "x");
  EXPECT_EQ(d.finish(), "<");
}

TEST(DetokenizerTest, EarliestStopStringWins) {
  std::map<int32_t, std::string> pieces = {{1, "one STOP two </s>"}};
  StreamingDetokenizer d(piece_decoder(pieces), {}, {"</s>", "STOP"});
  EXPECT_EQ(d.add(1), "one ");
  EXPECT_TRUE(d.stopped());
  EXPECT_EQ(d.matched_stop(), "STOP");
}

TEST(DetokenizerTest, IncludeStopStrKeepsTheMatchAndNothingAfter) {
  std::map<int32_t, std::string> pieces = {{1, "ab"}, {2, "c<"}, {3, "/s"}, {4, ">tail"}};
  StreamingDetokenizer d(piece_decoder(pieces), {}, {"</s>"}, /*include_stop_str=*/true);
  EXPECT_EQ(d.matched_stop(), "");
  EXPECT_EQ(d.add(1), "ab");
  EXPECT_EQ(d.add(2), "c");
  EXPECT_EQ(d.add(3), "");
  EXPECT_EQ(d.add(4), "</s>");
  EXPECT_TRUE(d.stopped());
  EXPECT_EQ(d.matched_stop(), "</s>");
  EXPECT_EQ(d.text(), "abc</s>");
  EXPECT_EQ(d.finish(), "");
}

}  // namespace
}  // namespace tierserve

// StreamRecorder on recorded streams: TTFT is the first chunk with content (not a chat stream's
// role-only first chunk), ITL the gaps between content chunks, token counts from the usage
// chunk; bytes split anywhere; error events, a missing [DONE] and an empty stream fail.
#include "bench/stream_recorder.h"

#include <gtest/gtest.h>

namespace tierserve::bench {
namespace {

// A chat stream as tierserve and vLLM send it: role chunk, three content chunks, a final chunk
// with finish_reason and no content, the usage chunk, [DONE].
const char* const kChatEvents[] = {
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    ("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4,"
     "\"total_tokens\":11}}\n\n"),
    "data: [DONE]\n\n"};
const double kTimes[] = {0.050, 0.100, 0.130, 0.190, 0.200, 0.200, 0.201};

TEST(StreamRecorderTest, ChatStreamTimings) {
  StreamRecorder rec;
  for (size_t i = 0; i < std::size(kChatEvents); ++i) rec.feed(kChatEvents[i], kTimes[i]);
  RequestRecord r;
  rec.finish(0.205, 99, &r);
  ASSERT_TRUE(r.success) << r.error;
  EXPECT_DOUBLE_EQ(r.ttft_s, 0.100);  // not the role chunk at 0.050
  ASSERT_EQ(r.itl_s.size(), 2u);
  EXPECT_NEAR(r.itl_s[0], 0.030, 1e-12);
  EXPECT_NEAR(r.itl_s[1], 0.060, 1e-12);
  EXPECT_DOUBLE_EQ(r.latency_s, 0.205);
  EXPECT_EQ(r.prompt_tokens, 7);  // usage, not the dataset's 99
  EXPECT_EQ(r.output_tokens, 4);  // usage, not the 3 content chunks
  EXPECT_EQ(r.generated_text, "Hello world");
}

TEST(StreamRecorderTest, BytesSplitAnywhereGiveTheSameEvents) {
  std::string all;
  for (const char* e : kChatEvents) all += e;
  for (size_t cut = 1; cut < all.size(); cut += 7) {
    StreamRecorder rec;
    rec.feed(std::string_view(all).substr(0, cut), 1.0);
    rec.feed(std::string_view(all).substr(cut), 2.0);
    RequestRecord r;
    rec.finish(2.0, 0, &r);
    ASSERT_TRUE(r.success) << "cut " << cut << ": " << r.error;
    EXPECT_EQ(r.generated_text, "Hello world") << "cut " << cut;
    EXPECT_EQ(rec.content_chunks(), 3);
  }
}

TEST(StreamRecorderTest, CompletionsWithCrLfAndNoUsage) {
  StreamRecorder rec;
  rec.feed("data: {\"choices\":[{\"text\":\"a\",\"index\":0}]}\r\n\r\n", 0.5);
  rec.feed(": a comment\r\n\r\ndata: {\"choices\":[{\"text\":\"b\",\"index\":0}]}\r\n\r\n", 0.75);
  rec.feed("data: [DONE]\r\n\r\n", 0.8);
  RequestRecord r;
  rec.finish(0.8, 12, &r);
  ASSERT_TRUE(r.success) << r.error;
  EXPECT_DOUBLE_EQ(r.ttft_s, 0.5);
  EXPECT_EQ(r.prompt_tokens, 12);  // the dataset's, without usage
  EXPECT_EQ(r.output_tokens, 2);   // content chunks, without usage
}

TEST(StreamRecorderTest, FailuresAreClassified) {
  {
    StreamRecorder rec;
    rec.feed("data: {\"choices\":[{\"text\":\"a\"}]}\n\n", 0.1);
    rec.feed("data: {\"error\":{\"message\":\"engine failed\",\"code\":500}}\n\n", 0.2);
    RequestRecord r;
    rec.finish(0.2, 0, &r);
    EXPECT_FALSE(r.success);
    EXPECT_EQ(r.error_class, "stream");
    EXPECT_NE(r.error.find("engine failed"), std::string::npos);
  }
  {
    StreamRecorder rec;
    rec.feed("data: {\"choices\":[{\"text\":\"a\"}]}\n\n", 0.1);
    RequestRecord r;
    rec.finish(0.2, 0, &r);  // the connection ended before [DONE]
    EXPECT_FALSE(r.success);
    EXPECT_NE(r.error.find("[DONE]"), std::string::npos);
  }
  {
    StreamRecorder rec;
    rec.feed("data: not json\n\ndata: [DONE]\n\n", 0.1);
    RequestRecord r;
    rec.finish(0.2, 0, &r);
    EXPECT_FALSE(r.success);
    EXPECT_NE(r.error.find("not a JSON object"), std::string::npos);
  }
  {
    StreamRecorder rec;
    rec.feed("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: [DONE]\n\n", 0.1);
    RequestRecord r;
    rec.finish(0.2, 0, &r);
    EXPECT_FALSE(r.success);
    EXPECT_NE(r.error.find("no content"), std::string::npos);
  }
}

}  // namespace
}  // namespace tierserve::bench

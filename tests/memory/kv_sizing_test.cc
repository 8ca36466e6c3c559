// KV-cache sizing at start-up: budget arithmetic, the override, and the errors users see.
#include "memory/kv_sizing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/units.h"

namespace tierserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

KvSizingInputs inputs() {
  KvSizingInputs in;
  in.device_memory_bytes = 10 * kGiB;
  in.memory_utilization = 0.5;
  in.used_bytes = 1 * kGiB;
  in.block_bytes = 2 * kMiB;
  in.block_size = 16;
  in.max_model_len = 4096;
  return in;
}

TEST(KvSizingTest, BudgetLessUsedBytesInWholeBlocks) {
  const KvSizing s = size_kv_cache(inputs()).value();
  // 10 GiB * 0.5 - 1 GiB = 4 GiB = 2048 blocks of 2 MiB.
  EXPECT_EQ(s.num_blocks, 2048);
  EXPECT_EQ(s.watermark_blocks, 20);
  EXPECT_EQ(s.bytes, 4 * kGiB);
  EXPECT_EQ(s.num_tokens, 2048 * 16);
  EXPECT_DOUBLE_EQ(s.max_concurrency, 2048.0 / 256);
}

TEST(KvSizingTest, APartialBlockIsNotCounted) {
  KvSizingInputs in = inputs();
  in.used_bytes = 1 * kGiB + 1;  // leaves 4 GiB - 1 byte
  const KvSizing s = size_kv_cache(in).value();
  EXPECT_EQ(s.num_blocks, 2047);
  EXPECT_EQ(s.bytes, 2047 * 2 * kMiB);
  // max_model_len not a multiple of the block size rounds up to whole blocks.
  in.max_model_len = 4097;
  EXPECT_DOUBLE_EQ(size_kv_cache(in).value().max_concurrency, 2047.0 / 257);
}

TEST(KvSizingTest, KvCacheMemoryBytesOverridesTheFraction) {
  KvSizingInputs in = inputs();
  in.kv_cache_memory_bytes = 100 * kMiB;
  in.used_bytes = 20 * kGiB;  // more than the fraction allows: the override does not care
  in.max_model_len = 800;     // exactly the 50 blocks of 16
  const Result<KvSizing> r = size_kv_cache(in);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value().num_blocks, 50);
  EXPECT_EQ(r.value().watermark_blocks, 0);
  EXPECT_EQ(r.value().bytes, 100 * kMiB);
  in.max_model_len = 801;
  EXPECT_THAT(size_kv_cache(in).status().message(), HasSubstr("use --max-model-len 800 or less"));
}

TEST(KvSizingTest, NoRoomLeftByTheWeights) {
  KvSizingInputs in = inputs();
  in.used_bytes = 5 * kGiB;  // exactly the budget
  const Result<KvSizing> r = size_kv_cache(in);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("no room for the KV cache"));
  EXPECT_THAT(r.status().message(), HasSubstr("5.00 GiB"));
  EXPECT_THAT(r.status().message(), HasSubstr("--gpu-memory-utilization"));
  EXPECT_THAT(r.status().message(), HasSubstr("--kv-cache-memory-bytes"));
}

TEST(KvSizingTest, OneRequestOfMaxModelLenMustFitAboveTheWatermark) {
  KvSizingInputs in = inputs();
  in.kv_cache_memory_bytes = 300 * 2 * kMiB;  // 300 blocks, watermark 3: 297 usable
  in.max_model_len = 297 * 16;
  ASSERT_TRUE(size_kv_cache(in).is_ok());
  in.max_model_len = 297 * 16 + 1;
  const Result<KvSizing> r = size_kv_cache(in);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("--max-model-len 4753 tokens"));
  EXPECT_THAT(r.status().message(), HasSubstr("use --max-model-len 4752 or less"));
  EXPECT_THAT(r.status().message(), HasSubstr("4800 tokens"));
  // The suggestion fits.
  in.max_model_len = 4752;
  EXPECT_TRUE(size_kv_cache(in).is_ok());
}

TEST(KvSizingTest, NotEvenOneBlock) {
  KvSizingInputs in = inputs();
  in.kv_cache_memory_bytes = 1 * kMiB;  // half a block
  const Result<KvSizing> r = size_kv_cache(in);
  ASSERT_FALSE(r.is_ok());
  EXPECT_THAT(r.status().message(), HasSubstr("cannot hold one request"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("or less")));  // no length would fit
  EXPECT_THAT(r.status().message(), HasSubstr("give the KV cache more memory"));
}

TEST(KvSizingTest, MissingShapeIsAnError) {
  KvSizingInputs in = inputs();
  in.block_bytes = 0;
  EXPECT_EQ(size_kv_cache(in).status().code(), StatusCode::kInvalidArgument);
  in = inputs();
  in.max_model_len = 0;
  EXPECT_EQ(size_kv_cache(in).status().code(), StatusCode::kInvalidArgument);
  in = inputs();
  in.block_size = 0;
  EXPECT_EQ(size_kv_cache(in).status().code(), StatusCode::kInvalidArgument);
}

TEST(KvSizingTest, HugeBudgetsStayInInt32Blocks) {
  KvSizingInputs in = inputs();
  in.kv_cache_memory_bytes = uint64_t{1} << 60;
  in.block_bytes = 1;
  const KvSizing s = size_kv_cache(in).value();
  EXPECT_GT(s.num_blocks, 0);
  EXPECT_EQ(s.num_tokens, int64_t{s.num_blocks} * 16);
}

TEST(KvSizingTest, Describe) {
  const KvSizing s = size_kv_cache(inputs()).value();
  EXPECT_EQ(s.describe(16, 4096),
            "KV cache 4.00 GiB = 32768 tokens (2048 blocks of 16); maximum concurrency for 4096 "
            "tokens per request: 8.00x");
}

}  // namespace
}  // namespace tierserve

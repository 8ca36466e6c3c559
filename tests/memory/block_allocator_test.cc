#include "memory/block_allocator.h"

#include <gtest/gtest.h>

#include "memory/block_table.h"

namespace tierserve {
namespace {

TEST(BlockAllocatorTest, AllocatesUntilFullThenRefuses) {
  BlockAllocator a(3);
  EXPECT_EQ(a.num_free(), 3);
  std::vector<int32_t> got;
  for (int i = 0; i < 3; ++i) {
    auto b = a.allocate();
    ASSERT_TRUE(b.is_ok());
    got.push_back(b.value());
  }
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2}));
  auto full = a.allocate();
  ASSERT_FALSE(full.is_ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
}

TEST(BlockAllocatorTest, FreesOnlyAtRefCountZero) {
  BlockAllocator a(2);
  int32_t b = a.allocate().value();
  a.add_ref(b);
  EXPECT_EQ(a.ref_count(b), 2);
  EXPECT_FALSE(a.release(b));
  EXPECT_EQ(a.num_free(), 1);
  EXPECT_TRUE(a.release(b));
  EXPECT_EQ(a.num_free(), 2);
  EXPECT_EQ(a.num_allocated(), 0);
}

TEST(BlockAllocatorDeathTest, DoubleFreeIsABug) {
  BlockAllocator a(1);
  int32_t b = a.allocate().value();
  a.release(b);
  EXPECT_DEATH(a.release(b), "release of free block");
}

TEST(BlockTableTest, SlotsFollowBlocks) {
  BlockTable t(4);
  EXPECT_EQ(t.blocks_needed_to_append(5), 2);
  t.push_block(7);
  t.push_block(2);
  t.append_tokens(5);
  EXPECT_EQ(t.slot(0), 28);
  EXPECT_EQ(t.slot(3), 31);
  EXPECT_EQ(t.slot(4), 8);
  EXPECT_EQ(t.blocks_needed_to_append(3), 0);
  EXPECT_EQ(t.blocks_needed_to_append(4), 1);
  EXPECT_EQ(t.clear(), (std::vector<int32_t>{7, 2}));
  EXPECT_EQ(t.num_tokens(), 0);
}

}  // namespace
}  // namespace tierserve

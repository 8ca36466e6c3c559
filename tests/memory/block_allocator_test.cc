#include "memory/block_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <random>
#include <vector>

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

TEST(BlockAllocatorTest, AllocateTakesTheFrontOfTheFreeQueue) {
  BlockAllocator a(4);
  EXPECT_EQ(a.next_free(), 0);
  for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(a.allocate().value(), i);
  EXPECT_EQ(a.next_free(), -1);
  // Uncached blocks go to the front: the last one freed is handed out first.
  a.release(1);
  a.release(3);
  EXPECT_EQ(a.next_free(), 3);
  EXPECT_EQ(a.allocate().value(), 3);
  EXPECT_EQ(a.allocate().value(), 1);
}

TEST(BlockAllocatorTest, CachedBlocksWaitAtTheBackInFreeingOrder) {
  BlockAllocator a(5);
  for (int32_t i = 0; i < 5; ++i) ASSERT_EQ(a.allocate().value(), i);
  a.release(2, /*cached=*/true);
  a.release(0, /*cached=*/true);
  a.release(4);  // uncached: before every cached block
  a.release(1, /*cached=*/true);
  a.release(3);
  EXPECT_EQ(a.num_free(), 5);
  std::vector<int32_t> order;
  for (int32_t i = 0; i < 5; ++i) order.push_back(a.allocate().value());
  EXPECT_EQ(order, (std::vector<int32_t>{3, 4, 2, 0, 1}));
}

TEST(BlockAllocatorTest, ReuseTakesAFreeBlockOutOfTheQueue) {
  BlockAllocator a(3);
  for (int32_t i = 0; i < 3; ++i) ASSERT_EQ(a.allocate().value(), i);
  a.release(0, true);
  a.release(1, true);
  a.release(2, true);
  a.reuse(1);
  EXPECT_EQ(a.ref_count(1), 1);
  EXPECT_EQ(a.num_free(), 2);
  EXPECT_EQ(a.allocate().value(), 0);
  EXPECT_EQ(a.allocate().value(), 2);
  EXPECT_FALSE(a.allocate().is_ok());
  // Reviving the only free block leaves the queue empty and consistent.
  a.release(2, true);
  a.reuse(2);
  EXPECT_EQ(a.next_free(), -1);
  a.release(0);
  EXPECT_EQ(a.allocate().value(), 0);
}

// Random operations against a model of the queue: a std::deque of free blocks.
TEST(BlockAllocatorTest, RandomOperationsMatchAQueueModel) {
  constexpr int32_t kBlocks = 7;
  BlockAllocator a(kBlocks);
  std::deque<int32_t> free_queue;
  for (int32_t b = 0; b < kBlocks; ++b) free_queue.push_back(b);
  std::vector<int32_t> refs(kBlocks, 0);
  std::mt19937 rng(7);
  for (int step = 0; step < 20000; ++step) {
    const int32_t b = static_cast<int32_t>(rng() % kBlocks);
    switch (rng() % 4) {
      case 0: {  // allocate
        auto got = a.allocate();
        if (free_queue.empty()) {
          ASSERT_FALSE(got.is_ok());
        } else {
          ASSERT_EQ(got.value(), free_queue.front());
          refs[static_cast<size_t>(free_queue.front())] = 1;
          free_queue.pop_front();
        }
        break;
      }
      case 1:  // add_ref
        if (refs[static_cast<size_t>(b)] > 0) {
          a.add_ref(b);
          ++refs[static_cast<size_t>(b)];
        }
        break;
      case 2: {  // release
        if (refs[static_cast<size_t>(b)] == 0) break;
        const bool cached = rng() % 2 == 0;
        const bool freed = a.release(b, cached);
        ASSERT_EQ(freed, --refs[static_cast<size_t>(b)] == 0);
        if (freed) {
          if (cached) {
            free_queue.push_back(b);
          } else {
            free_queue.push_front(b);
          }
        }
        break;
      }
      case 3:  // reuse
        if (refs[static_cast<size_t>(b)] == 0) {
          a.reuse(b);
          refs[static_cast<size_t>(b)] = 1;
          free_queue.erase(std::find(free_queue.begin(), free_queue.end(), b));
        }
        break;
    }
    ASSERT_EQ(a.num_free(), static_cast<int32_t>(free_queue.size()));
    ASSERT_EQ(a.next_free(), free_queue.empty() ? -1 : free_queue.front());
    for (int32_t i = 0; i < kBlocks; ++i) ASSERT_EQ(a.ref_count(i), refs[static_cast<size_t>(i)]);
  }
}

TEST(BlockAllocatorDeathTest, ReuseOfABlockInUseIsABug) {
  BlockAllocator a(2);
  int32_t b = a.allocate().value();
  EXPECT_DEATH(a.reuse(b), "reuse of block 0, which is in use");
}

TEST(BlockAllocatorDeathTest, AddRefOfAFreeBlockIsABug) {
  BlockAllocator a(2);
  EXPECT_DEATH(a.add_ref(1), "add_ref of free block 1");
}

TEST(BlockAllocatorDeathTest, CachedDoubleFreeIsABug) {
  BlockAllocator a(2);
  int32_t b = a.allocate().value();
  a.add_ref(b);
  a.release(b, true);
  a.release(b, true);
  EXPECT_DEATH(a.release(b, true), "release of free block");
}

TEST(BlockAllocatorDeathTest, OutOfRangeIdIsABug) {
  BlockAllocator a(2);
  EXPECT_DEATH(a.ref_count(2), "block 2 of 2");
  EXPECT_DEATH(a.release(-1), "block -1 of 2");
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

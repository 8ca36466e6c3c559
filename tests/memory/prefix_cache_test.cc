// PrefixCache (an open-addressing index from content hash to block) and the block hash chain.
#include "memory/prefix_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "memory/block_hash.h"

namespace tierserve {
namespace {

// A hash whose short_hash() (the probe start) is `home` and whose remaining bytes are `tag`, so
// that tests choose collisions.
BlockHash make_hash(uint64_t home, uint64_t tag) {
  BlockHash h{};
  std::memcpy(h.data(), &home, sizeof home);
  std::memcpy(h.data() + 8, &tag, sizeof tag);
  return h;
}

TEST(BlockHashTest, ChainsParentSaltAndTokens) {
  const std::vector<int32_t> t = {1, 2, 3, 4};
  const BlockHash a = hash_salt("model-a");
  const BlockHash b = hash_salt("model-b");
  EXPECT_NE(a, b);
  EXPECT_EQ(hash_salt("model-a"), a);
  EXPECT_EQ(hash_block(a, t.data(), 4), hash_block(a, t.data(), 4));
  EXPECT_NE(hash_block(a, t.data(), 4), hash_block(b, t.data(), 4));
  EXPECT_NE(hash_block(a, t.data(), 4), hash_block(a, t.data(), 3));
  const std::vector<int32_t> u = {1, 2, 3, 5};
  EXPECT_NE(hash_block(a, t.data(), 4), hash_block(a, u.data(), 4));
  // The same block after a different parent is a different block.
  const BlockHash first = hash_block(a, t.data(), 4);
  EXPECT_NE(hash_block(first, t.data(), 4), first);
}

TEST(BlockHashTest, IsSha256OfParentAndLittleEndianTokens) {
  // SHA-256("") is a published constant.
  const BlockHash empty = hash_salt("");
  const uint8_t expected[4] = {0xe3, 0xb0, 0xc4, 0x42};
  EXPECT_EQ(std::memcmp(empty.data(), expected, 4), 0);
  uint64_t v;
  std::memcpy(&v, empty.data(), 8);
  EXPECT_EQ(short_hash(empty), v);
}

TEST(PrefixCacheTest, InsertFindErase) {
  PrefixCache c(4);
  const BlockHash h1 = make_hash(1, 1);
  const BlockHash h2 = make_hash(2, 2);
  EXPECT_EQ(c.find(h1), -1);
  EXPECT_TRUE(c.insert(h1, 3));
  EXPECT_EQ(c.find(h1), 3);
  EXPECT_TRUE(c.contains(3));
  EXPECT_EQ(c.hash_of(3), h1);
  // One block per hash: a second block for h1 is refused and changes nothing.
  EXPECT_FALSE(c.insert(h1, 0));
  EXPECT_FALSE(c.contains(0));
  EXPECT_EQ(c.find(h1), 3);
  EXPECT_TRUE(c.insert(h2, 0));
  EXPECT_EQ(c.size(), 2);
  c.erase(3);
  EXPECT_EQ(c.find(h1), -1);
  EXPECT_FALSE(c.contains(3));
  EXPECT_EQ(c.find(h2), 0);
  c.erase(3);  // no entry: nothing happens
  EXPECT_EQ(c.size(), 1);
  EXPECT_TRUE(c.insert(h1, 3));
  EXPECT_EQ(c.find(h1), 3);
}

TEST(PrefixCacheTest, CollidingHashesSurviveErasureOfAnyOne) {
  // All four start probing at the same slot, the last one of the table, so the run wraps.
  for (int32_t victim = 0; victim < 4; ++victim) {
    PrefixCache c(4);  // 16 slots
    for (int32_t b = 0; b < 4; ++b)
      ASSERT_TRUE(c.insert(make_hash(15, static_cast<uint64_t>(b)), b));
    c.erase(victim);
    for (int32_t b = 0; b < 4; ++b) {
      EXPECT_EQ(c.find(make_hash(15, static_cast<uint64_t>(b))), b == victim ? -1 : b)
          << "victim " << victim << " block " << b;
    }
  }
}

TEST(PrefixCacheDeathTest, InsertOfARegisteredBlockIsABug) {
  PrefixCache c(2);
  ASSERT_TRUE(c.insert(make_hash(0, 0), 1));
  EXPECT_DEATH((void)c.insert(make_hash(0, 1), 1), "already in the prefix cache");
}

// Random inserts and erasures against a std::map model. The probe starts are drawn from a few
// slots around the end of the table so that runs collide, interleave and wrap around, which is
// where backward-shift deletion goes wrong.
void run_against_model(int32_t num_blocks, int num_homes, uint32_t seed) {
  PrefixCache c(num_blocks);
  std::map<BlockHash, int32_t> by_hash;
  std::vector<BlockHash> of_block(static_cast<size_t>(num_blocks));
  std::vector<bool> registered(static_cast<size_t>(num_blocks), false);
  std::mt19937_64 rng(seed);
  // The table's size as the constructor picks it: a power of two above 2 * num_blocks. Homes
  // cluster around its end and start; the high bits vary, so different short hashes share a home.
  uint64_t capacity = 8;
  while (capacity < 2 * static_cast<uint64_t>(num_blocks) + 1) capacity *= 2;
  auto random_hash = [&]() {
    const uint64_t home = (capacity - 2 + rng() % static_cast<uint64_t>(num_homes)) % capacity;
    return make_hash(home + capacity * (rng() % 2), rng() % 16);  // equal hashes recur
  };
  for (int step = 0; step < 50000; ++step) {
    const int32_t b = static_cast<int32_t>(rng() % static_cast<uint64_t>(num_blocks));
    if (rng() % 2 == 0) {
      if (registered[static_cast<size_t>(b)]) continue;
      const BlockHash h = random_hash();
      const bool expect = by_hash.find(h) == by_hash.end();
      ASSERT_EQ(c.insert(h, b), expect) << "step " << step;
      if (expect) {
        by_hash[h] = b;
        of_block[static_cast<size_t>(b)] = h;
        registered[static_cast<size_t>(b)] = true;
      }
    } else {
      c.erase(b);
      if (registered[static_cast<size_t>(b)]) {
        by_hash.erase(of_block[static_cast<size_t>(b)]);
        registered[static_cast<size_t>(b)] = false;
      }
    }
    ASSERT_EQ(c.size(), static_cast<int32_t>(by_hash.size()));
    for (int32_t i = 0; i < num_blocks; ++i) {
      ASSERT_EQ(c.contains(i), registered[static_cast<size_t>(i)]);
      if (registered[static_cast<size_t>(i)]) {
        ASSERT_EQ(c.hash_of(i), of_block[static_cast<size_t>(i)]);
        ASSERT_EQ(c.find(of_block[static_cast<size_t>(i)]), i) << "step " << step;
      }
    }
    // A few lookups of hashes that may or may not be present.
    for (int k = 0; k < 4; ++k) {
      const BlockHash h = random_hash();
      auto it = by_hash.find(h);
      ASSERT_EQ(c.find(h), it == by_hash.end() ? -1 : it->second) << "step " << step;
    }
  }
}

TEST(PrefixCacheTest, RandomOperationsMatchAMapSmallTable) { run_against_model(5, 3, 1); }

TEST(PrefixCacheTest, RandomOperationsMatchAMapFullishTable) {
  // 7 blocks in 16 slots: long runs that cover most of the table.
  run_against_model(7, 6, 2);
}

TEST(PrefixCacheTest, RandomOperationsMatchAMapSpreadHomes) { run_against_model(13, 12, 3); }

}  // namespace
}  // namespace tierserve

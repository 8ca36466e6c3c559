// KvCacheManager: admission with prefix hits, ref counts, copy-on-write after a fork, the prefix
// cache's hit rules and the eviction order of freed blocks.
#include "memory/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <deque>
#include <numeric>
#include <string>
#include <vector>

#include "memory/block_hash.h"

namespace tierserve {
namespace {

KvCacheOptions options(int32_t num_blocks, int32_t block_size, bool caching = true,
                       int32_t watermark = 0, std::string salt = "model") {
  KvCacheOptions o;
  o.num_blocks = num_blocks;
  o.block_size = block_size;
  o.enable_prefix_caching = caching;
  o.watermark_blocks = watermark;
  o.salt = std::move(salt);
  return o;
}

std::vector<int32_t> tokens_from(int32_t first, int32_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Admits `kv` for all of `tokens` at once (with whatever prefix hit there is) and marks every
// token computed, as a finished prefill would. Returns the hit.
PrefixHit admit_computed(KvCacheManager& m, SequenceKv& kv, const std::vector<int32_t>& tokens) {
  const int32_t n = static_cast<int32_t>(tokens.size());
  PrefixHit hit = m.find_cached_prefix(tokens.data(), n);
  EXPECT_TRUE(m.can_admit(hit, n));
  m.admit(kv, hit, n);
  m.cache_blocks(kv, tokens.data(), n);
  return hit;
}

int32_t hit_blocks(const KvCacheManager& m, const std::vector<int32_t>& tokens) {
  return static_cast<int32_t>(
      m.find_cached_prefix(tokens.data(), static_cast<int32_t>(tokens.size())).blocks.size());
}

TEST(KvCacheManagerTest, AdmitTakesBlocksForEveryTokenAndFreeReturnsThem) {
  KvCacheManager m(options(8, 4));
  SequenceKv kv(4);
  const std::vector<int32_t> t = tokens_from(0, 9);
  const PrefixHit hit = admit_computed(m, kv, t);
  EXPECT_TRUE(hit.blocks.empty());
  EXPECT_EQ(kv.table.num_tokens(), 9);
  EXPECT_EQ(kv.table.blocks(), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(kv.hashes.size(), 2u);  // only full blocks are hashed
  EXPECT_EQ(m.num_used_blocks(), 3);
  EXPECT_EQ(m.num_free_blocks(), 5);
  m.free(kv);
  EXPECT_TRUE(kv.table.blocks().empty());
  EXPECT_TRUE(kv.hashes.empty());
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.num_free_blocks(), 8);
}

TEST(KvCacheManagerTest, SharedPrefixHasOneRefPerUser) {
  KvCacheManager m(options(16, 4));
  const std::vector<int32_t> t = tokens_from(10, 10);  // 2 full blocks and 2 tokens
  SequenceKv a(4), b(4), c(4);
  admit_computed(m, a, t);
  const PrefixHit hb = admit_computed(m, b, t);
  const PrefixHit hc = admit_computed(m, c, concat(t, {7, 7, 7}));
  ASSERT_EQ(hb.blocks.size(), 2u);
  EXPECT_EQ(hb.num_tokens, 8);
  EXPECT_EQ(hb.blocks, (std::vector<int32_t>{a.table.blocks()[0], a.table.blocks()[1]}));
  EXPECT_EQ(hc.blocks, hb.blocks);
  EXPECT_EQ(hb.hashes, std::vector<BlockHash>(a.hashes.begin(), a.hashes.begin() + 2));
  for (int32_t blk : hb.blocks) EXPECT_EQ(m.allocator().ref_count(blk), 3);
  // Each sequence's own last block is private.
  EXPECT_EQ(m.allocator().ref_count(a.table.blocks()[2]), 1);
  EXPECT_EQ(m.allocator().ref_count(b.table.blocks()[2]), 1);
  EXPECT_NE(a.table.blocks()[2], b.table.blocks()[2]);
  EXPECT_EQ(m.num_used_blocks(), 2 + 1 + 1 + 2);  // shared, a, b, c (13 tokens)
  m.free(b);
  for (int32_t blk : hb.blocks) EXPECT_EQ(m.allocator().ref_count(blk), 2);
  m.free(a);
  for (int32_t blk : hb.blocks) EXPECT_EQ(m.allocator().ref_count(blk), 1);
  m.free(c);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(m.num_free_blocks(), 16);
  // Freed, but still findable until evicted.
  EXPECT_EQ(hit_blocks(m, t), 2);
}

TEST(KvCacheManagerTest, TheLastTokenIsNeverServedFromTheCache) {
  KvCacheManager m(options(16, 4));
  const std::vector<int32_t> t = tokens_from(0, 12);  // exactly 3 full blocks
  SequenceKv a(4);
  admit_computed(m, a, t);
  EXPECT_EQ(m.prefix_cache().size(), 3);
  EXPECT_EQ(hit_blocks(m, t), 2);
  EXPECT_EQ(hit_blocks(m, concat(t, {99})), 3);
  EXPECT_EQ(hit_blocks(m, tokens_from(0, 5)), 1);
  EXPECT_EQ(hit_blocks(m, tokens_from(0, 4)), 0);
  EXPECT_EQ(hit_blocks(m, tokens_from(0, 1)), 0);
}

TEST(KvCacheManagerTest, HitsNeedEqualWholeBlocksFromTheStart) {
  KvCacheManager m(options(16, 4));
  const std::vector<int32_t> t = tokens_from(0, 12);
  SequenceKv a(4);
  admit_computed(m, a, t);
  // The same tokens at a different offset.
  EXPECT_EQ(hit_blocks(m, concat({5}, t)), 0);
  EXPECT_EQ(hit_blocks(m, concat(tokens_from(100, 4), t)), 0);
  // A different first block: nothing after it hits either.
  std::vector<int32_t> u = concat(t, {1});
  u[0] = 1000;
  EXPECT_EQ(hit_blocks(m, u), 0);
  // A difference in the second block: only the first hits.
  u = concat(t, {1});
  u[7] = 1000;
  EXPECT_EQ(hit_blocks(m, u), 1);
  // A partial last block never hits, even when its tokens match.
  EXPECT_EQ(hit_blocks(m, tokens_from(0, 7)), 1);
}

TEST(KvCacheManagerTest, TheSaltIsHashedIntoEveryBlock) {
  const std::vector<int32_t> t = tokens_from(0, 9);
  KvCacheManager ma(options(8, 4, true, 0, "weights-a"));
  KvCacheManager mb(options(8, 4, true, 0, "weights-b"));
  SequenceKv a(4), b(4);
  admit_computed(ma, a, t);
  admit_computed(mb, b, t);
  const BlockHash first_a = hash_block(hash_salt("weights-a"), t.data(), 4);
  const BlockHash first_b = hash_block(hash_salt("weights-b"), t.data(), 4);
  EXPECT_EQ(ma.prefix_cache().hash_of(a.table.blocks()[0]), first_a);
  EXPECT_EQ(mb.prefix_cache().hash_of(b.table.blocks()[0]), first_b);
  EXPECT_EQ(a.hashes[1], hash_block(first_a, t.data() + 4, 4));
  // Content cached under one salt is never found under the other.
  EXPECT_EQ(mb.prefix_cache().find(first_a), -1);
  EXPECT_EQ(mb.prefix_cache().find(a.hashes[1]), -1);
  EXPECT_EQ(ma.prefix_cache().find(first_b), -1);
}

TEST(KvCacheManagerTest, AHitOnAFreedBlockRevivesIt) {
  KvCacheManager m(options(8, 4));
  const std::vector<int32_t> t = tokens_from(0, 9);
  SequenceKv a(4);
  admit_computed(m, a, t);
  const std::vector<int32_t> blocks = a.table.blocks();
  m.free(a);
  EXPECT_EQ(m.num_free_blocks(), 8);
  const PrefixHit hit = m.find_cached_prefix(t.data(), 9);
  ASSERT_EQ(hit.blocks, (std::vector<int32_t>{blocks[0], blocks[1]}));
  for (int32_t blk : hit.blocks) EXPECT_EQ(m.allocator().ref_count(blk), 0);
  SequenceKv b(4);
  ASSERT_TRUE(m.can_admit(hit, 9));
  m.admit(b, hit, 9);
  for (int32_t blk : hit.blocks) EXPECT_EQ(m.allocator().ref_count(blk), 1);
  EXPECT_EQ(m.num_free_blocks(), 8 - 3);
  EXPECT_EQ(m.num_used_blocks(), 3);
  EXPECT_EQ(b.table.num_tokens(), 9);
  m.free(b);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, CanAdmitCountsRevivedBlocksAndTheWatermark) {
  KvCacheManager m(options(6, 4, true, /*watermark=*/1));
  const std::vector<int32_t> t = tokens_from(0, 9);
  SequenceKv a(4);
  admit_computed(m, a, t);  // 3 blocks, 2 of them cached
  m.free(a);
  // 6 free; a hit on 2 freed blocks plus 3 fresh ones takes 5 and leaves the watermark.
  const std::vector<int32_t> u = concat(tokens_from(0, 8), tokens_from(50, 12));
  PrefixHit hit = m.find_cached_prefix(u.data(), 20);
  ASSERT_EQ(hit.blocks.size(), 2u);
  EXPECT_TRUE(m.can_admit(hit, 20));
  EXPECT_FALSE(m.can_admit(hit, 21));  // one more block would eat the watermark
  PrefixHit none;
  EXPECT_TRUE(m.can_admit(none, 20));
  EXPECT_FALSE(m.can_admit(none, 21));
  SequenceKv b(4);
  m.admit(b, hit, 20);
  EXPECT_EQ(m.num_free_blocks(), 1);
  // Growth of a running sequence may use the watermark.
  EXPECT_TRUE(m.can_append(b, 24));
  EXPECT_FALSE(m.can_append(b, 25));
  std::vector<BlockCopy> copies;
  m.append(b, 24, &copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(m.num_free_blocks(), 0);
  m.free(b);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, EvictingACachedBlockRemovesItsEntry) {
  KvCacheManager m(options(4, 4));
  const std::vector<int32_t> t = tokens_from(0, 9);
  SequenceKv a(4);
  admit_computed(m, a, t);
  m.free(a);
  EXPECT_EQ(m.prefix_cache().size(), 2);
  EXPECT_EQ(hit_blocks(m, t), 2);
  // A sequence with other tokens takes every block, evicting both cached ones.
  SequenceKv b(4);
  admit_computed(m, b, tokens_from(100, 15));
  EXPECT_EQ(hit_blocks(m, t), 0);
  // Its own 3 full blocks are cached now, and nothing else.
  EXPECT_EQ(m.prefix_cache().size(), 3);
  for (int32_t blk : b.table.blocks()) {
    EXPECT_EQ(m.prefix_cache().contains(blk), blk != b.table.blocks().back());
  }
  m.free(b);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

// The free queue hands out blocks without cached content first, then cached blocks least
// recently freed first, and among blocks freed together a chain's leaves before their parents.
TEST(KvCacheManagerTest, EvictionOrder) {
  KvCacheManager m(options(10, 2));
  const std::vector<int32_t> ta = tokens_from(100, 6);  // 3 full blocks
  const std::vector<int32_t> tb = tokens_from(200, 4);  // 2 full blocks
  const std::vector<int32_t> tc = tokens_from(300, 3);  // 1 full block, 1 partial
  SequenceKv a(2), b(2), c(2);
  admit_computed(m, a, ta);
  admit_computed(m, b, tb);
  admit_computed(m, c, tc);
  ASSERT_EQ(a.table.blocks(), (std::vector<int32_t>{0, 1, 2}));
  ASSERT_EQ(b.table.blocks(), (std::vector<int32_t>{3, 4}));
  ASSERT_EQ(c.table.blocks(), (std::vector<int32_t>{5, 6}));
  m.free(a);
  m.free(b);
  m.free(c);
  EXPECT_EQ(m.prefix_cache().size(), 6);
  // A revived block freed again becomes the most recently freed.
  SequenceKv b2(2);
  const PrefixHit hit = admit_computed(m, b2, concat(tb, {1}));
  ASSERT_EQ(hit.blocks, (std::vector<int32_t>{3, 4}));
  ASSERT_EQ(b2.table.blocks()[2], 6);  // c's uncached partial block went to the front
  m.free(b2);
  // Expected order: never-used 7, 8, 9 and the uncached 6 first (6 freed last, so in front),
  // then cached: a's leaf to root, c's full block, b's leaf to root.
  const std::vector<int32_t> expected = {6, 7, 8, 9, 2, 1, 0, 5, 4, 3};
  std::vector<int32_t> order;
  std::deque<SequenceKv> taken;  // hold every block taken, so each take is a new one
  for (size_t i = 0; i < expected.size(); ++i) {
    // One block of fresh (uncached) content at a time; the cache shrinks with each eviction.
    SequenceKv& one = taken.emplace_back(2);
    admit_computed(m, one, {static_cast<int32_t>(1000 + i)});
    ASSERT_EQ(one.table.blocks().size(), 1u);
    order.push_back(one.table.blocks()[0]);
    const int32_t cached_left = i < 4 ? 6 : static_cast<int32_t>(expected.size() - 1 - i);
    EXPECT_EQ(m.prefix_cache().size(), cached_left) << "after taking " << order.back();
  }
  EXPECT_EQ(order, expected);
  EXPECT_EQ(m.num_free_blocks(), 0);
  for (SequenceKv& kv : taken) m.free(kv);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, ForkSharesEveryBlockAndCopiesOnlyASharedPartialBlock) {
  KvCacheManager m(options(8, 4));
  const std::vector<int32_t> t = tokens_from(0, 6);
  SequenceKv parent(4), child(4);
  admit_computed(m, parent, t);
  m.fork(parent, child);
  EXPECT_EQ(child.table.blocks(), parent.table.blocks());
  EXPECT_EQ(child.table.num_tokens(), 6);
  EXPECT_EQ(child.hashes, parent.hashes);
  for (int32_t blk : parent.table.blocks()) EXPECT_EQ(m.allocator().ref_count(blk), 2);
  EXPECT_EQ(m.num_used_blocks(), 2);
  const int32_t full = parent.table.blocks()[0];
  const int32_t partial = parent.table.blocks()[1];
  // The child appends first: it gets a private copy of the partial block.
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(m.can_append(child, 7));
  m.append(child, 7, &copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, partial);
  EXPECT_EQ(copies[0].dst, child.table.blocks()[1]);
  EXPECT_NE(copies[0].dst, partial);
  EXPECT_EQ(child.table.blocks()[0], full);
  EXPECT_EQ(m.allocator().ref_count(full), 2);
  EXPECT_EQ(m.allocator().ref_count(partial), 1);
  EXPECT_EQ(m.allocator().ref_count(copies[0].dst), 1);
  // The parent's block is its own now: no copy.
  copies.clear();
  m.append(parent, 7, &copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(parent.table.blocks()[1], partial);
  // Appending into new blocks copies nothing; the shared full block is never copied.
  m.append(parent, 12, &copies);
  m.append(child, 12, &copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(parent.table.blocks()[0], full);
  EXPECT_EQ(child.table.blocks()[0], full);
  m.free(parent);
  EXPECT_EQ(m.allocator().ref_count(full), 1);
  m.free(child);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, TheParentAppendingFirstGetsTheCopy) {
  KvCacheManager m(options(8, 4));
  SequenceKv parent(4), child(4);
  admit_computed(m, parent, tokens_from(0, 5));
  m.fork(parent, child);
  const int32_t partial = parent.table.blocks()[1];
  // A copy is needed for the shared block; counted by can_append.
  KvCacheManager tight(options(2, 4));
  SequenceKv p2(4), c2(4);
  admit_computed(tight, p2, tokens_from(0, 5));
  tight.fork(p2, c2);
  EXPECT_FALSE(tight.can_append(p2, 6));  // no block for the copy
  EXPECT_TRUE(tight.can_append(p2, 5));   // nothing new: no copy either
  std::vector<BlockCopy> copies;
  m.append(parent, 6, &copies);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, partial);
  EXPECT_EQ(parent.table.blocks()[1], copies[0].dst);
  EXPECT_EQ(child.table.blocks()[1], partial);
  copies.clear();
  m.append(child, 6, &copies);
  EXPECT_TRUE(copies.empty());
  m.free(child);
  m.free(parent);
  tight.free(c2);
  tight.free(p2);
  EXPECT_EQ(m.num_used_blocks(), 0);
  EXPECT_EQ(tight.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, ForkOfAFullLastBlockNeverCopies) {
  KvCacheManager m(options(8, 4));
  SequenceKv parent(4), child(4);
  admit_computed(m, parent, tokens_from(0, 8));
  m.fork(parent, child);
  std::vector<BlockCopy> copies;
  m.append(parent, 9, &copies);
  m.append(child, 9, &copies);
  EXPECT_TRUE(copies.empty());
  EXPECT_NE(parent.table.blocks()[2], child.table.blocks()[2]);
  EXPECT_EQ(m.num_used_blocks(), 4);
  m.free(parent);
  m.free(child);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, CachesOnlyComputedFullBlocks) {
  KvCacheManager m(options(8, 4));
  const std::vector<int32_t> t = tokens_from(0, 10);
  SequenceKv a(4);
  PrefixHit none;
  m.admit(a, none, 10);  // slots reserved for 10, computed: none yet
  m.cache_blocks(a, t.data(), 3);
  EXPECT_EQ(m.prefix_cache().size(), 0);
  m.cache_blocks(a, t.data(), 7);
  EXPECT_EQ(m.prefix_cache().size(), 1);
  EXPECT_EQ(a.hashes.size(), 1u);
  m.cache_blocks(a, t.data(), 10);
  EXPECT_EQ(m.prefix_cache().size(), 2);
  // num_computed beyond the reserved slots caches nothing more.
  const std::vector<int32_t> longer = tokens_from(0, 16);
  m.cache_blocks(a, longer.data(), 16);
  EXPECT_EQ(m.prefix_cache().size(), 2);
  m.free(a);
}

TEST(KvCacheManagerTest, DuplicateContentStaysPrivateAndIsNotKeptAsCache) {
  KvCacheManager m(options(8, 4));
  const std::vector<int32_t> t = tokens_from(0, 5);
  SequenceKv a(4), b(4);
  PrefixHit none;
  // Both admitted before either computed: no hit, the same content in two blocks.
  m.admit(a, none, 5);
  m.admit(b, none, 5);
  m.cache_blocks(a, t.data(), 5);
  m.cache_blocks(b, t.data(), 5);
  EXPECT_EQ(m.prefix_cache().size(), 1);
  EXPECT_TRUE(m.prefix_cache().contains(a.table.blocks()[0]));
  EXPECT_FALSE(m.prefix_cache().contains(b.table.blocks()[0]));
  EXPECT_EQ(b.hashes, a.hashes);
  const int32_t b0 = b.table.blocks()[0];
  m.free(b);
  // b's duplicate is uncached, so it is handed out before anything cached.
  EXPECT_EQ(m.allocator().next_free(), b0);
  m.free(a);
  EXPECT_EQ(hit_blocks(m, t), 1);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, PrefixCachingOff) {
  KvCacheManager m(options(8, 4, /*caching=*/false));
  const std::vector<int32_t> t = tokens_from(0, 9);
  SequenceKv a(4), b(4);
  admit_computed(m, a, t);
  EXPECT_EQ(m.prefix_cache().size(), 0);
  const PrefixHit hit = admit_computed(m, b, t);
  EXPECT_TRUE(hit.blocks.empty());
  EXPECT_EQ(m.num_used_blocks(), 6);
  EXPECT_EQ(m.prefix_query_tokens(), 0);
  m.free(a);
  m.free(b);
  EXPECT_EQ(m.num_used_blocks(), 0);
}

TEST(KvCacheManagerTest, PrefixMetricsCountQueriedAndHitTokens) {
  KvCacheManager m(options(8, 4));
  const std::vector<int32_t> t = tokens_from(0, 9);
  SequenceKv a(4), b(4);
  admit_computed(m, a, t);
  admit_computed(m, b, t);
  EXPECT_EQ(m.prefix_query_tokens(), 18);
  EXPECT_EQ(m.prefix_hit_tokens(), 8);
  m.free(a);
  m.free(b);
}

TEST(KvCacheManagerDeathTest, CommitsWithoutRoomAreBugs) {
  KvCacheManager m(options(2, 4));
  SequenceKv a(4);
  PrefixHit none;
  EXPECT_DEATH(m.admit(a, none, 9), "admit without room");
  m.admit(a, none, 8);
  std::vector<BlockCopy> copies;
  EXPECT_DEATH(m.append(a, 9, &copies), "append without room");
  EXPECT_DEATH(m.admit(a, none, 1), "admit of a sequence that holds blocks");
  m.free(a);
}

}  // namespace
}  // namespace tierserve

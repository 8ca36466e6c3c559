#include "memory/kv_cache_manager.h"

#include <algorithm>

#include "common/check.h"

namespace tierserve {

KvCacheManager::KvCacheManager(const KvCacheOptions& options)
    : options_(options),
      allocator_(options.num_blocks),
      cache_(options.num_blocks),
      root_(hash_salt(options.salt)) {
  TS_CHECK_GT(options.block_size, 0);
  TS_CHECK(options.watermark_blocks >= 0 && options.watermark_blocks < options.num_blocks)
      << "watermark of " << options.watermark_blocks << " blocks of " << options.num_blocks;
}

PrefixHit KvCacheManager::find_cached_prefix(const int32_t* tokens, int32_t num_tokens) const {
  PrefixHit hit;
  hit.query_tokens = num_tokens;
  if (!options_.enable_prefix_caching) return hit;
  const int32_t bs = options_.block_size;
  const int32_t max_blocks = (num_tokens - 1) / bs;
  BlockHash parent = root_;
  for (int32_t i = 0; i < max_blocks; ++i) {
    BlockHash h = hash_block(parent, tokens + static_cast<size_t>(i) * bs, bs);
    const int32_t block = cache_.find(h);
    if (block < 0) break;
    hit.blocks.push_back(block);
    hit.hashes.push_back(h);
    parent = h;
  }
  hit.num_tokens = static_cast<int32_t>(hit.blocks.size()) * bs;
  return hit;
}

bool KvCacheManager::can_admit(const PrefixHit& hit, int32_t num_tokens) const {
  TS_CHECK_GE(num_tokens, hit.num_tokens);
  const int32_t bs = options_.block_size;
  const int32_t fresh = (num_tokens + bs - 1) / bs - static_cast<int32_t>(hit.blocks.size());
  int32_t revived = 0;  // cached blocks that sit in the free queue
  for (int32_t b : hit.blocks) revived += allocator_.ref_count(b) == 0 ? 1 : 0;
  return fresh + revived <= allocator_.num_free() - options_.watermark_blocks;
}

void KvCacheManager::admit(SequenceKv& kv, const PrefixHit& hit, int32_t num_tokens) {
  TS_CHECK(kv.table.blocks().empty()) << "admit of a sequence that holds blocks";
  TS_CHECK(can_admit(hit, num_tokens)) << "admit without room";
  // Hit blocks first: taking fresh blocks could otherwise evict them.
  for (int32_t b : hit.blocks) {
    if (allocator_.ref_count(b) == 0) {
      allocator_.reuse(b);
    } else {
      allocator_.add_ref(b);
    }
    kv.table.push_block(b);
  }
  kv.hashes = hit.hashes;
  kv.table.append_tokens(hit.num_tokens);
  for (int32_t need = kv.table.blocks_needed_to_append(num_tokens - hit.num_tokens); need > 0;
       --need) {
    kv.table.push_block(take_block());
  }
  kv.table.append_tokens(num_tokens - hit.num_tokens);
  if (options_.enable_prefix_caching) {
    prefix_query_tokens_ += hit.query_tokens;
    prefix_hit_tokens_ += hit.num_tokens;
  }
}

bool KvCacheManager::needs_copy(const SequenceKv& kv, int32_t num_tokens) const {
  const BlockTable& t = kv.table;
  return num_tokens > t.num_tokens() && t.num_tokens() % t.block_size() != 0 &&
         allocator_.ref_count(t.blocks().back()) > 1;
}

int32_t KvCacheManager::blocks_to_append(const SequenceKv& kv, int32_t num_tokens) const {
  TS_CHECK_GE(num_tokens, kv.table.num_tokens());
  return kv.table.blocks_needed_to_append(num_tokens - kv.table.num_tokens()) +
         (needs_copy(kv, num_tokens) ? 1 : 0);
}

bool KvCacheManager::can_append(const SequenceKv& kv, int32_t num_tokens) const {
  return blocks_to_append(kv, num_tokens) <= allocator_.num_free();
}

void KvCacheManager::append(SequenceKv& kv, int32_t num_tokens, std::vector<BlockCopy>* copies) {
  TS_CHECK(can_append(kv, num_tokens)) << "append without room";
  BlockTable& t = kv.table;
  if (needs_copy(kv, num_tokens)) {
    const int32_t shared = t.blocks().back();
    const int32_t own = take_block();
    copies->push_back({shared, own});
    t.replace_last_block(own);
    allocator_.release(shared);  // still held by the other sharers
  }
  for (int32_t need = t.blocks_needed_to_append(num_tokens - t.num_tokens()); need > 0; --need) {
    t.push_block(take_block());
  }
  t.append_tokens(num_tokens - t.num_tokens());
}

void KvCacheManager::fork(const SequenceKv& parent, SequenceKv& child) {
  TS_CHECK(child.table.blocks().empty()) << "fork into a sequence that holds blocks";
  for (int32_t b : parent.table.blocks()) {
    allocator_.add_ref(b);
    child.table.push_block(b);
  }
  child.table.append_tokens(parent.table.num_tokens());
  child.hashes = parent.hashes;
}

void KvCacheManager::cache_blocks(SequenceKv& kv, const int32_t* tokens, int32_t num_computed) {
  if (!options_.enable_prefix_caching) return;
  const int32_t bs = options_.block_size;
  const int32_t full = std::min(num_computed, kv.table.num_tokens()) / bs;
  for (int32_t i = static_cast<int32_t>(kv.hashes.size()); i < full; ++i) {
    const BlockHash& parent = i == 0 ? root_ : kv.hashes[static_cast<size_t>(i - 1)];
    kv.hashes.push_back(hash_block(parent, tokens + static_cast<size_t>(i) * bs, bs));
    const int32_t block = kv.table.blocks()[static_cast<size_t>(i)];
    // Content already cached under another block stays there; this block stays private.
    if (!cache_.contains(block)) cache_.insert(kv.hashes.back(), block);
  }
}

void KvCacheManager::free(SequenceKv& kv) {
  std::vector<int32_t> blocks = kv.table.clear();
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    allocator_.release(*it, cache_.contains(*it));
  }
  kv.hashes.clear();
}

std::vector<EvictedBlock> KvCacheManager::take_evictions() {
  std::vector<EvictedBlock> out;
  out.swap(evicted_);
  return out;
}

int32_t KvCacheManager::take_block() {
  const int32_t block = allocator_.next_free();
  TS_CHECK_GE(block, 0) << "no free KV block";
  if (options_.record_evictions && cache_.contains(block)) {
    evicted_.push_back({block, cache_.hash_of(block)});
  }
  cache_.erase(block);  // evict its old content
  return allocator_.allocate().value();
}

}  // namespace tierserve

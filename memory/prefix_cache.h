// PrefixCache: which physical block holds the KV of which full-block content hash
// (memory/block_hash.h). An index only: blocks, ref counts and eviction order belong to the
// BlockAllocator, and the KvCacheManager keeps the two consistent. At most one block per hash and
// one hash per block. A fixed-size open-addressing table sized at construction, so lookups and
// updates never allocate. Not thread-safe: owned by the engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include "memory/block_hash.h"

namespace tierserve {

class PrefixCache {
 public:
  explicit PrefixCache(int32_t num_blocks);

  // The block registered under `hash`, or -1.
  int32_t find(const BlockHash& hash) const;
  // Registers `block` under `hash`. Returns false (and changes nothing) when `hash` already has a
  // block; `block` must not be registered.
  bool insert(const BlockHash& hash, int32_t block);
  // Forgets `block`'s entry, if it has one (its content is about to be overwritten).
  void erase(int32_t block);
  bool contains(int32_t block) const { return has_hash_[static_cast<size_t>(block)] != 0; }
  const BlockHash& hash_of(int32_t block) const { return hashes_[static_cast<size_t>(block)]; }
  int32_t size() const { return size_; }

 private:
  size_t home(const BlockHash& hash) const { return short_hash(hash) & mask_; }

  std::vector<BlockHash> hashes_;  // per block: its hash, when has_hash_
  std::vector<uint8_t> has_hash_;  // per block: registered
  std::vector<int32_t> slots_;     // linear-probing table of block ids; -1 = empty
  size_t mask_ = 0;                // slots_.size() - 1 (a power of two, > 2 * num_blocks)
  int32_t size_ = 0;
};

}  // namespace tierserve

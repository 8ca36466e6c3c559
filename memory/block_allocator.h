// BlockAllocator: ids and reference counts of the physical KV blocks of one tier. Metadata only:
// the bytes live in a pool (DESIGN.md §2). O(1) allocate and free. Not thread-safe: owned by the
// engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace tierserve {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);
  BlockAllocator(const BlockAllocator&) = delete;
  BlockAllocator& operator=(const BlockAllocator&) = delete;

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_list_.size()); }
  int32_t num_allocated() const { return num_blocks() - num_free(); }

  // Takes a free block with ref count 1, or kResourceExhausted when none is free.
  Result<int32_t> allocate();
  // Adds a user of an allocated block (a shared prefix, a fork).
  void add_ref(int32_t block);
  // Drops a user; the block returns to the free list when its ref count reaches zero.
  // Returns true when the block was freed.
  bool release(int32_t block);
  int32_t ref_count(int32_t block) const;

 private:
  std::vector<int32_t> ref_counts_;  // per block; 0 = free
  std::vector<int32_t> free_list_;   // stack of free block ids
};

}  // namespace tierserve

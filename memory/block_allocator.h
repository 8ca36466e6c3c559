// BlockAllocator: ids and reference counts of the physical KV blocks of one tier. Metadata only:
// the bytes live in a pool (DESIGN.md §2). Every operation is O(1). Not thread-safe: owned by the
// engine thread.
//
// Free blocks (ref count 0) wait in one queue in eviction order. A block freed without cached
// content goes to the front, so it is handed out first; a block freed with content that the
// prefix cache still indexes goes to the back, so cached blocks are reused least recently freed
// first, and a cache hit can revive one (reuse()) before it is handed out again.
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
  // Blocks with ref count 0, cached or not.
  int32_t num_free() const { return num_free_; }
  int32_t num_allocated() const { return num_blocks() - num_free_; }

  // Takes the front of the free queue with ref count 1, or kResourceExhausted when none is free.
  // The caller drops any cached content the block held.
  Result<int32_t> allocate();
  // The block allocate() would return next, or -1 when none is free.
  int32_t next_free() const;
  // Adds a user of an allocated block (a shared prefix, a fork).
  void add_ref(int32_t block);
  // Takes a free block out of the queue with ref count 1 (a prefix-cache hit on freed content).
  void reuse(int32_t block);
  // Drops a user. At ref count zero the block joins the free queue: at the back when `cached`
  // (its content stays findable until the block is handed out again), else at the front.
  // Returns true when the block was freed.
  bool release(int32_t block, bool cached = false);
  int32_t ref_count(int32_t block) const;

 private:
  void check_id(int32_t block) const;
  void unlink(int32_t block);
  void link_before(int32_t block, int32_t next);

  std::vector<int32_t> ref_counts_;  // per block; 0 = free
  // The free queue: a doubly linked list through these arrays, indexed by block id, with a
  // sentinel at index num_blocks (its next_ is the front, its prev_ the back).
  std::vector<int32_t> next_;
  std::vector<int32_t> prev_;
  int32_t num_free_ = 0;
};

}  // namespace tierserve

#include "memory/block_allocator.h"

#include "common/check.h"

namespace tierserve {

BlockAllocator::BlockAllocator(int32_t num_blocks) {
  TS_CHECK_GE(num_blocks, 0);
  const size_t n = static_cast<size_t>(num_blocks);
  ref_counts_.assign(n, 0);
  next_.assign(n + 1, num_blocks);
  prev_.assign(n + 1, num_blocks);
  // Low ids first.
  for (int32_t b = 0; b < num_blocks; ++b) link_before(b, num_blocks);
  num_free_ = num_blocks;
}

void BlockAllocator::check_id(int32_t block) const {
  TS_CHECK(block >= 0 && block < num_blocks()) << "block " << block << " of " << num_blocks();
}

void BlockAllocator::unlink(int32_t block) {
  const size_t b = static_cast<size_t>(block);
  next_[static_cast<size_t>(prev_[b])] = next_[b];
  prev_[static_cast<size_t>(next_[b])] = prev_[b];
  next_[b] = prev_[b] = -1;
  --num_free_;
}

void BlockAllocator::link_before(int32_t block, int32_t next) {
  const size_t b = static_cast<size_t>(block);
  const int32_t prev = prev_[static_cast<size_t>(next)];
  next_[b] = next;
  prev_[b] = prev;
  next_[static_cast<size_t>(prev)] = block;
  prev_[static_cast<size_t>(next)] = block;
  ++num_free_;
}

int32_t BlockAllocator::next_free() const {
  const int32_t front = next_.back();
  return front == num_blocks() ? -1 : front;
}

Result<int32_t> BlockAllocator::allocate() {
  const int32_t block = next_free();
  if (block < 0) {
    return resource_exhausted("no free KV block (all " + std::to_string(num_blocks()) + " in use)");
  }
  unlink(block);
  ref_counts_[static_cast<size_t>(block)] = 1;
  return block;
}

void BlockAllocator::add_ref(int32_t block) {
  check_id(block);
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  TS_CHECK_GT(rc, 0) << "add_ref of free block " << block;
  ++rc;
}

void BlockAllocator::reuse(int32_t block) {
  check_id(block);
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  TS_CHECK_EQ(rc, 0) << "reuse of block " << block << ", which is in use";
  unlink(block);
  rc = 1;
}

bool BlockAllocator::release(int32_t block, bool cached) {
  check_id(block);
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  TS_CHECK_GT(rc, 0) << "release of free block " << block;
  if (--rc > 0) return false;
  const int32_t sentinel = num_blocks();
  link_before(block, cached ? sentinel : next_[static_cast<size_t>(sentinel)]);
  return true;
}

int32_t BlockAllocator::ref_count(int32_t block) const {
  check_id(block);
  return ref_counts_[static_cast<size_t>(block)];
}

}  // namespace tierserve

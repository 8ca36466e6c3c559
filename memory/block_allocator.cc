#include "memory/block_allocator.h"

#include "common/check.h"

namespace tierserve {

BlockAllocator::BlockAllocator(int32_t num_blocks) {
  TS_CHECK_GE(num_blocks, 0);
  ref_counts_.assign(static_cast<size_t>(num_blocks), 0);
  free_list_.reserve(static_cast<size_t>(num_blocks));
  // Pop from the back: hand out low ids first.
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

Result<int32_t> BlockAllocator::allocate() {
  if (free_list_.empty()) {
    return resource_exhausted("no free KV block (all " + std::to_string(num_blocks()) + " in use)");
  }
  int32_t block = free_list_.back();
  free_list_.pop_back();
  ref_counts_[static_cast<size_t>(block)] = 1;
  return block;
}

void BlockAllocator::add_ref(int32_t block) {
  TS_CHECK(block >= 0 && block < num_blocks()) << "block " << block;
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  TS_CHECK_GT(rc, 0) << "add_ref of free block " << block;
  ++rc;
}

bool BlockAllocator::release(int32_t block) {
  TS_CHECK(block >= 0 && block < num_blocks()) << "block " << block;
  int32_t& rc = ref_counts_[static_cast<size_t>(block)];
  TS_CHECK_GT(rc, 0) << "release of free block " << block;
  if (--rc > 0) return false;
  free_list_.push_back(block);
  return true;
}

int32_t BlockAllocator::ref_count(int32_t block) const {
  TS_CHECK(block >= 0 && block < num_blocks()) << "block " << block;
  return ref_counts_[static_cast<size_t>(block)];
}

}  // namespace tierserve

#include "memory/block_table.h"

#include "common/check.h"

namespace tierserve {

void BlockTable::append_tokens(int32_t n) {
  TS_CHECK_GE(n, 0);
  TS_CHECK_LE(blocks_for(num_tokens_ + n), static_cast<int32_t>(blocks_.size()))
      << "append of " << n << " tokens without blocks";
  num_tokens_ += n;
}

void BlockTable::replace_last_block(int32_t block) {
  TS_CHECK(!blocks_.empty()) << "replace_last_block of an empty table";
  blocks_.back() = block;
}

int32_t BlockTable::slot(int32_t i) const {
  TS_CHECK(i >= 0 && i / block_size_ < static_cast<int32_t>(blocks_.size())) << "token " << i;
  return blocks_[static_cast<size_t>(i / block_size_)] * block_size_ + i % block_size_;
}

std::vector<int32_t> BlockTable::clear() {
  std::vector<int32_t> out;
  out.swap(blocks_);
  num_tokens_ = 0;
  return out;
}

}  // namespace tierserve

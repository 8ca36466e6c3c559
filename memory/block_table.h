// BlockTable: the physical blocks holding one sequence's KV, in token order, and the number of
// tokens stored. Token i lives in block blocks()[i / block_size] at offset i % block_size.
#pragma once

#include <cstdint>
#include <vector>

namespace tierserve {

class BlockTable {
 public:
  explicit BlockTable(int32_t block_size) : block_size_(block_size) {}

  int32_t block_size() const { return block_size_; }
  int32_t num_tokens() const { return num_tokens_; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  // Blocks needed to hold `num_tokens` tokens.
  int32_t blocks_for(int32_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }
  // Extra blocks needed to append `n` tokens.
  int32_t blocks_needed_to_append(int32_t n) const {
    int32_t need = blocks_for(num_tokens_ + n) - static_cast<int32_t>(blocks_.size());
    return need > 0 ? need : 0;
  }
  void push_block(int32_t block) { blocks_.push_back(block); }
  // Swaps the last block for `block` (copy-on-write); the caller moves the bytes.
  void replace_last_block(int32_t block);
  // Records `n` more tokens; the caller has pushed enough blocks first.
  void append_tokens(int32_t n);
  // Slot (block * block_size + offset) of token `i`.
  int32_t slot(int32_t i) const;
  // Removes every block and token; returns the blocks for the caller to release.
  std::vector<int32_t> clear();

 private:
  int32_t block_size_;
  int32_t num_tokens_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace tierserve

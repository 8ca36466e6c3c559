#include "memory/prefix_cache.h"

#include "common/check.h"

namespace tierserve {

PrefixCache::PrefixCache(int32_t num_blocks)
    : hashes_(static_cast<size_t>(num_blocks)), has_hash_(static_cast<size_t>(num_blocks), 0) {
  size_t capacity = 8;
  while (capacity < 2 * static_cast<size_t>(num_blocks) + 1) capacity *= 2;
  slots_.assign(capacity, -1);
  mask_ = capacity - 1;
}

int32_t PrefixCache::find(const BlockHash& hash) const {
  for (size_t i = home(hash);; i = (i + 1) & mask_) {
    const int32_t b = slots_[i];
    if (b < 0) return -1;
    if (hashes_[static_cast<size_t>(b)] == hash) return b;
  }
}

bool PrefixCache::insert(const BlockHash& hash, int32_t block) {
  TS_CHECK(!contains(block)) << "block " << block << " is already in the prefix cache";
  size_t i = home(hash);
  for (; slots_[i] >= 0; i = (i + 1) & mask_) {
    if (hashes_[static_cast<size_t>(slots_[i])] == hash) return false;
  }
  slots_[i] = block;
  hashes_[static_cast<size_t>(block)] = hash;
  has_hash_[static_cast<size_t>(block)] = 1;
  ++size_;
  return true;
}

void PrefixCache::erase(int32_t block) {
  if (!contains(block)) return;
  size_t i = home(hash_of(block));
  while (slots_[i] != block) i = (i + 1) & mask_;
  // Backward-shift deletion: move later entries of the probe run into the hole when their home
  // does not lie cyclically in (hole, their slot].
  for (size_t j = (i + 1) & mask_; slots_[j] >= 0; j = (j + 1) & mask_) {
    const size_t h = home(hashes_[static_cast<size_t>(slots_[j])]);
    const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (!stays) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = -1;
  has_hash_[static_cast<size_t>(block)] = 0;
  --size_;
}

}  // namespace tierserve

// MergeMap: BPE merge rules keyed by the pair of token ids, in an open-addressing hash table
// (the hot lookup of BPE encoding; std::unordered_map's node chasing costs about twice as much).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tierserve::tokenizer {

// One merge rule: (left, right) -> new_id, applied in increasing rank.
struct Merge {
  int32_t rank = -1;    // position in the merges list; lower merges first
  int32_t new_id = -1;  // id of the merged token
};

class MergeMap {
 public:
  // Adds or replaces the rule for (left, right); a later rule for the same pair wins, as in
  // Hugging Face's HashMap collect().
  void insert(int32_t left, int32_t right, Merge merge);
  // The rule for (left, right), or nullptr.
  const Merge* find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = pack(left, right);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.merge;
      if (s.key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge;
  };
  static uint64_t pack(int32_t a, int32_t b) {
    return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return static_cast<size_t>(key);
  }
  void grow();

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace tierserve::tokenizer

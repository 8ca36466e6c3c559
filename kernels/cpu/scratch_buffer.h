// A growable, 64-byte-aligned scratch buffer for kernels: sized at first use and grown only when
// a larger shape arrives, so steady-state calls do not allocate.
#pragma once

#include <cstddef>
#include <cstdlib>

#include "common/check.h"

namespace tierserve {

// Not thread-safe; one owner. Contents are not preserved when the buffer grows.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer() { std::free(data_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least `count` elements of T (uninitialised), valid until the next call that grows.
  template <typename T>
  T* get(size_t count) {
    reserve(count * sizeof(T));
    return static_cast<T*>(data_);
  }

  size_t capacity() const { return capacity_; }

 private:
  static constexpr size_t kAlign = 64;

  void reserve(size_t bytes) {
    if (bytes <= capacity_ && data_ != nullptr) return;
    // Grow by at least half again, so a slowly growing shape reallocates O(log n) times.
    size_t want = bytes > capacity_ + capacity_ / 2 ? bytes : capacity_ + capacity_ / 2;
    want = (want + kAlign - 1) / kAlign * kAlign;
    if (want == 0) want = kAlign;
    std::free(data_);
    data_ = std::aligned_alloc(kAlign, want);
    TS_CHECK(data_ != nullptr) << "scratch allocation of " << want << " bytes failed";
    capacity_ = want;
  }

  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace tierserve

// KvPool: the device-tier bytes of the paged KV cache (DESIGN.md §2), allocated once at start-up
// from the backend. Bytes only: which block belongs to whom is the KvCacheManager's business.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "kernels/backend.h"

namespace tierserve {

class KvPool {
 public:
  // Allocates `num_blocks` blocks of `layout` from `backend`, which must outlive the pool.
  static Result<std::unique_ptr<KvPool>> create(Backend* backend, const KvBlockLayout& layout,
                                                int32_t num_blocks);
  ~KvPool();
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  const KvCacheView& view() const { return view_; }
  size_t bytes() const {
    return static_cast<size_t>(view_.num_blocks) * view_.layout.block_bytes();
  }

 private:
  KvPool(Backend* backend, KvCacheView view) : backend_(backend), view_(view) {}
  Backend* backend_;
  KvCacheView view_;
};

}  // namespace tierserve

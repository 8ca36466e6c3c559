#include "memory/kv_pool.h"

#include "common/units.h"

namespace tierserve {

Result<std::unique_ptr<KvPool>> KvPool::create(Backend* backend, const KvBlockLayout& layout,
                                               int32_t num_blocks) {
  if (num_blocks <= 0) return invalid_argument("KV pool needs at least one block");
  size_t bytes = static_cast<size_t>(num_blocks) * layout.block_bytes();
  auto mem = backend->allocate(bytes);
  if (!mem.is_ok()) {
    return mem.status().with_context("KV cache of " + std::to_string(num_blocks) + " blocks (" +
                                     format_bytes(bytes) + ")");
  }
  KvCacheView view;
  view.base = mem.value();
  view.layout = layout;
  view.num_blocks = num_blocks;
  return std::unique_ptr<KvPool>(new KvPool(backend, view));
}

KvPool::~KvPool() { backend_->deallocate(view_.base); }

}  // namespace tierserve

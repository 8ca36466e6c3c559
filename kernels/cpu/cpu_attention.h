// write_kv and paged_attention on the CPU (the contracts are in kernels/backend.h).
#pragma once

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/scratch_buffer.h"

namespace tierserve {

// Not thread-safe: one caller at a time. Owns per-thread score buffers, sized by the longest
// context seen so far, so steady-state calls do not allocate.
class CpuAttention {
 public:
  // `pool` and `kernels` must outlive this object.
  CpuAttention(ThreadPool* pool, const CpuKernels* kernels) : pool_(pool), kernels_(kernels) {}
  CpuAttention(const CpuAttention&) = delete;
  CpuAttention& operator=(const CpuAttention&) = delete;

  void write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                const AttentionMetadata& meta, const KvCacheView& cache);

  // Two passes per (query token, head): scores of every visible key (f32, in a per-thread
  // buffer), softmax, then the probability-weighted sum of V accumulated in f32 in the output
  // row. Work items are (token, head) pairs handed out dynamically across the pool. Each
  // output row depends only on its own query and keys, never on the rest of the batch.
  void paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                       const KvCacheView& cache, const AttentionParams& params,
                       const TensorView& out);

 private:
  ThreadPool* pool_;
  const CpuKernels* kernels_;
  ScratchBuffer scores_;  // [pool threads, scores_stride] f32
};

}  // namespace tierserve

// Dynamic work distribution over the kernel thread pool with a per-thread scratch slot.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "common/thread_pool.h"

namespace tierserve {

// Calls fn(slot, begin, end) over [0, n) in pieces of at most `grain` items, handed out
// dynamically. `slot` is in [0, pool.num_threads()) and no two concurrent calls share one, so
// fn may use per-slot scratch without locking. Returns when all items are done.
//
// Allocation-free: the closure given to the pool holds a single reference, which std::function
// stores inline.
template <typename Fn>
void parallel_slots(ThreadPool& pool, int64_t n, int64_t grain, const Fn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (pool.num_threads() == 1 || n <= grain) {
    fn(0, 0, n);
    return;
  }
  struct State {
    const Fn& fn;
    int64_t n, grain;
    std::atomic<int64_t> next{0};
  } state{fn, n, grain};
  // One pool item per slot; each drains the shared counter, so a thread that runs two slots in
  // turn finds the second one already empty.
  pool.parallel_for(pool.num_threads(), 1, [&state](int64_t slot_begin, int64_t slot_end) {
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      for (;;) {
        const int64_t begin = state.next.fetch_add(state.grain, std::memory_order_relaxed);
        if (begin >= state.n) break;
        state.fn(static_cast<int>(slot), begin, std::min(state.n, begin + state.grain));
      }
    }
  });
}

}  // namespace tierserve

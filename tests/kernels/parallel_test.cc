// parallel_slots (kernels/cpu/parallel.h): every item exactly once, with exclusive scratch slots.
#include "kernels/cpu/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "common/thread_pool.h"
#include "common/topology.h"

namespace tierserve {
namespace {

TEST(ParallelSlotsTest, SlotsAreExclusiveAndItemsCoveredOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads, nullptr);
    for (int64_t n : {1, 5, 333}) {
      for (int64_t grain : {1, 4, 1000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::vector<std::atomic<int>> in_use(static_cast<size_t>(threads));
        std::atomic<bool> shared{false}, bad_slot{false};
        parallel_slots(pool, n, grain, [&](int slot, int64_t begin, int64_t end) {
          if (slot < 0 || slot >= threads) {
            bad_slot = true;
            return;
          }
          if (in_use[static_cast<size_t>(slot)].fetch_add(1) != 0) shared = true;
          for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)]++;
          in_use[static_cast<size_t>(slot)].fetch_sub(1);
        });
        ASSERT_FALSE(bad_slot.load());
        EXPECT_FALSE(shared.load()) << "two calls used one slot at once";
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1);
      }
    }
  }
}

}  // namespace
}  // namespace tierserve

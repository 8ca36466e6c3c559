#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "common/topology.h"

namespace tierserve {
namespace {

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  Topology topology;
  ThreadPool pool(3, &topology);
  EXPECT_EQ(pool.num_threads(), 3);
  for (int64_t n : {1, 2, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << i;
  }
}

TEST(ThreadPoolTest, RespectsMinChunkAndRepeats) {
  ThreadPool pool(2, nullptr);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 200; ++rep) {
    pool.parallel_for(64, 16, [&](int64_t b, int64_t e) {
      EXPECT_GE(e - b, 16);
      for (int64_t i = b; i < e; ++i) sum += i;
    });
  }
  EXPECT_EQ(sum.load(), 200 * (63 * 64 / 2));
}

TEST(TopologyTest, HasCores) {
  Topology topology;
  EXPECT_GE(topology.num_cores(), 1);
  EXPECT_GE(topology.num_numa_nodes(), 1);
}

}  // namespace
}  // namespace tierserve

#include "common/thread_pool.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/topology.h"

namespace tierserve {
namespace {

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads, nullptr);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 4097}) {
      for (int64_t min_chunk : {1, 3, 100}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> calls{0};
        std::atomic<bool> small_chunk{false};
        pool.parallel_for(n, min_chunk, [&](int64_t begin, int64_t end) {
          ++calls;
          // Only the last chunk may be shorter than min_chunk.
          if (end - begin < min_chunk && end != n) small_chunk = true;
          for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)]++;
        });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
              << "index " << i << " n=" << n << " threads=" << threads;
        }
        EXPECT_EQ(calls.load() == 0, n == 0);
        EXPECT_FALSE(small_chunk.load());
      }
    }
  }
}

TEST(ThreadPoolTest, PinnedPoolRunsManyLoops) {
  Topology topology;
  ThreadPool pool(0, &topology);
  EXPECT_EQ(pool.num_threads(), topology.num_cores());
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 200; ++rep) {
    pool.parallel_for(100, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum += i;
    });
  }
  EXPECT_EQ(sum.load(), 200 * 4950);
}

TEST(TopologyTest, HasCores) {
  Topology topology;
  EXPECT_GE(topology.num_cores(), 1);
  EXPECT_GE(topology.num_numa_nodes(), 1);
}

// Binding to a node that does not exist is refused; node 0 (always present) may be refused only
// where the OS has no NUMA support, and the memory stays usable either way.
TEST(TopologyTest, BindsMemoryToANumaNodeByItsOsIndex) {
  Topology topology;
  const size_t bytes = 1 << 20;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_FALSE(topology.bind_memory_to_numa_node(p, bytes, -1));
  EXPECT_FALSE(topology.bind_memory_to_numa_node(p, bytes, 4096));
  const bool bound = topology.bind_memory_to_numa_node(p, bytes, 0);
  std::memset(p, 7, bytes);
  EXPECT_EQ(static_cast<unsigned char*>(p)[bytes - 1], 7);
  std::printf("binding to NUMA node 0: %s\n", bound ? "done" : "refused by the OS");
  munmap(p, bytes);
}

}  // namespace
}  // namespace tierserve

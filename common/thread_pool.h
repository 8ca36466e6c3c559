// A fixed pool of worker threads for CPU kernels, pinned one per core with hwloc.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tierserve {

class Topology;

// Runs data-parallel loops. parallel_for may be called from one thread at a time (the engine
// thread); it is not reentrant (a task must not call parallel_for on the same pool).
class ThreadPool {
 public:
  // `num_threads` counts the calling thread, which takes part in every loop; 0 means one per
  // core. With `topology`, thread i is pinned to core i (the caller to core 0).
  ThreadPool(int num_threads, const Topology* topology);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Splits [0, n) into contiguous chunks of at least `min_chunk` items and calls fn(begin, end)
  // on them across the pool; returns when all calls have returned.
  void parallel_for(int64_t n, int64_t min_chunk,
                    const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void worker_loop(int index);
  void run_chunks();

  int num_threads_;
  std::vector<std::thread> workers_;
  // Workers and the caller spin briefly before sleeping on the condition variables: a decode step
  // issues hundreds of short loops, and a futex wake-up per loop costs more than the loop.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<uint64_t> generation_{0};  // bumped per loop (under mutex_, for sleepers)
  std::atomic<bool> stop_{false};
  // The current loop, published by the release increment of generation_.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> pending_workers_{0};  // workers still inside the current loop
};

}  // namespace tierserve

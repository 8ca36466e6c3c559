#include "common/thread_pool.h"

#include <algorithm>

#include "common/topology.h"

namespace tierserve {

ThreadPool::ThreadPool(int num_threads, const Topology* topology) {
  if (num_threads <= 0) {
    num_threads = topology != nullptr ? topology->num_cores()
                                      : static_cast<int>(std::thread::hardware_concurrency());
  }
  num_threads_ = std::max(num_threads, 1);
  if (topology != nullptr) topology->bind_current_thread_to_core(0);
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i, topology] {
      if (topology != nullptr) topology->bind_current_thread_to_core(i);
      worker_loop(i);
    });
  }
}

namespace {

// Iterations of a pause loop before a thread blocks (a few hundred microseconds).
constexpr int kSpinIterations = 1 << 14;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  const int64_t num_chunks = (n_ + chunk_ - 1) / chunk_;
  for (;;) {
    int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= num_chunks) return;
    int64_t begin = c * chunk_;
    (*fn_)(begin, std::min(n_, begin + chunk_));
  }
}

void ThreadPool::worker_loop(int /*index*/) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spins = 0; g == seen && !stop_.load(std::memory_order_relaxed); ++spins) {
      if (spins < kSpinIterations) {
        cpu_relax();
      } else {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      }
      g = generation_.load(std::memory_order_acquire);
    }
    if (stop_.load()) return;
    seen = g;
    run_chunks();
    if (pending_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t min_chunk,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(min_chunk, 1);
  if (num_threads_ == 1 || n <= min_chunk) {
    fn(0, n);
    return;
  }
  // About four chunks per thread balances uneven work without much scheduling overhead.
  int64_t chunk = std::max(min_chunk, (n + 4 * num_threads_ - 1) / (4 * num_threads_));
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  next_chunk_.store(0, std::memory_order_relaxed);
  pending_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_chunks();
  for (int spins = 0; pending_workers_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kSpinIterations) {
      cpu_relax();
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return pending_workers_.load() == 0; });
    }
  }
  fn_ = nullptr;
}

}  // namespace tierserve

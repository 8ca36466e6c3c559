// The machine's CPU topology, read through hwloc, and pinning of threads to cores.
#pragma once

#include <memory>

namespace tierserve {

// Owns an hwloc topology. Thread-safe after construction (hwloc's read-only queries and
// binding calls are).
class Topology {
 public:
  Topology();
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  // Physical cores the process may run on (at least 1).
  int num_cores() const;
  // NUMA nodes (at least 1).
  int num_numa_nodes() const;
  // Binds the calling thread to core `core % num_cores()`. Returns false (and leaves the thread
  // unbound) where the OS refuses, e.g. in a restricted container.
  bool bind_current_thread_to_core(int core) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierserve

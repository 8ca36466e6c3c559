// The machine's CPU topology, read through hwloc, and pinning of threads to cores.
#pragma once

#include <cstddef>
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
  // Binds the pages of [addr, addr + bytes) to the NUMA node(s) of core `core % num_cores()`
  // (pages not yet touched are placed there when first touched). Returns false where the OS
  // or hwloc refuses (e.g. no NUMA support); the memory then stays where the kernel puts it.
  bool bind_memory_near_core(void* addr, size_t bytes, int core) const;
  // Binds the pages of [addr, addr + bytes) to NUMA node `os_index` (the kernel's numbering, as
  // /sys/bus/pci/devices/*/numa_node gives it for a PCI device such as a GPU). Returns false for
  // an unknown node or where the OS or hwloc refuses.
  bool bind_memory_to_numa_node(void* addr, size_t bytes, int os_index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierserve

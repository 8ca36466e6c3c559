// HostPool: the host tier's memory (DESIGN.md §2): one arena allocated at start-up, page-locked
// so that device copies can DMA from it and the OS never swaps it, and placed on the NUMA node
// nearest the device. Bytes only: the KV swapper and the weight streamer carve their regions
// out of it at start-up and keep their own metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "common/topology.h"
#include "kernels/backend.h"

namespace tierserve {

class HostPool {
 public:
  // How the arena's pages are held.
  enum class Pinning : uint8_t {
    kBackend,   // the backend's own pinned memory (Backend::allocate_pinned_host)
    kMlocked,   // mmap + mlock
    kUnlocked,  // mmap only: mlock was refused (RLIMIT_MEMLOCK); a warning was logged
  };

  // Allocates `bytes` (rounded up to whole pages): from the backend's pinned allocator where it
  // has one, otherwise mmap'ed, bound to the NUMA node of core `near_core` (the device's, for
  // the CPU backend its first kernel core) through hwloc, and mlock'ed. When the lock limit
  // refuses, the pool still works, unlocked, with a warning that says how to raise the limit.
  // kResourceExhausted when the memory itself cannot be had. `backend` and `topology` must
  // outlive the pool. bytes == 0 gives an empty pool.
  static Result<std::unique_ptr<HostPool>> create(uint64_t bytes, Backend* backend,
                                                  const Topology* topology, int near_core = 0);
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  char* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }  // the size asked for, rounded up to whole pages
  Pinning pinning() const { return pinning_; }

  // Start-up carving: the next `bytes` of the arena, aligned to `align` (a power of two),
  // or kResourceExhausted naming `what` when the arena has not that much left.
  Result<char*> carve(uint64_t bytes, uint64_t align, const char* what);
  uint64_t carved() const { return carved_; }

 private:
  HostPool() = default;
  Backend* backend_ = nullptr;
  char* data_ = nullptr;
  uint64_t bytes_ = 0;        // usable bytes (whole pages)
  uint64_t mapped_ = 0;       // bytes mapped (whole pages), for munmap
  char* map_base_ = nullptr;  // the mmap'ed region holding data_ (2 MiB-aligned inside it)
  uint64_t map_bytes_ = 0;
  uint64_t carved_ = 0;  // bytes handed out by carve()
  Pinning pinning_ = Pinning::kUnlocked;
};

}  // namespace tierserve

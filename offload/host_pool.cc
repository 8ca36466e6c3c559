#include "offload/host_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/logging.h"
#include "common/units.h"

namespace tierserve {
namespace {

constexpr uint64_t kHugePage = 2ull << 20;

}  // namespace

Result<std::unique_ptr<HostPool>> HostPool::create(uint64_t bytes, Backend* backend,
                                                   const Topology* topology, int near_core) {
  std::unique_ptr<HostPool> pool(new HostPool());
  pool->backend_ = backend;
  if (bytes == 0) return pool;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t mapped = (bytes + page - 1) / page * page;
  TS_ASSIGN_OR_RETURN(void* pinned, backend->allocate_pinned_host(mapped));
  if (pinned != nullptr) {
    pool->data_ = static_cast<char*>(pinned);
    pool->pinning_ = Pinning::kBackend;
  } else {
    // 2 MiB-aligned and advised onto huge pages: a 1 MiB O_DIRECT read into 4 KiB pages is 256
    // segments, more than a virtio disk takes in one request, and measured 3x slower
    // (benchmarks/results/disk_*.md).
    const uint64_t region = mapped + kHugePage;
    void* raw = mmap(nullptr, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      return resource_exhausted("host tier: cannot map " + format_bytes(mapped) + ": " +
                                std::strerror(errno));
    }
    pool->map_base_ = static_cast<char*>(raw);
    pool->map_bytes_ = region;
    const uintptr_t aligned =
        (reinterpret_cast<uintptr_t>(raw) + kHugePage - 1) / kHugePage * kHugePage;
    void* p = reinterpret_cast<void*>(aligned);
    madvise(p, mapped, MADV_HUGEPAGE);  // advice only: without THP the pages stay small
    pool->data_ = static_cast<char*>(p);
    // NUMA placement first: mlock faults the pages in, and they land where the policy says.
    if (topology != nullptr && topology->num_numa_nodes() > 1 &&
        !topology->bind_memory_near_core(p, mapped, near_core)) {
      TS_LOG(Warning) << "host tier: could not bind " << format_bytes(mapped)
                      << " to the device's NUMA node; the kernel places it";
    }
    if (mlock(p, mapped) == 0) {
      pool->pinning_ = Pinning::kMlocked;
    } else {
      const int err = errno;
      pool->pinning_ = Pinning::kUnlocked;
      TS_LOG(Warning) << "host tier: mlock of " << format_bytes(mapped) << " refused ("
                      << std::strerror(err)
                      << "); it works unlocked, but the OS may swap it out. Raise the limit with "
                         "`ulimit -l unlimited` (or LimitMEMLOCK= for a service)";
    }
  }
  pool->mapped_ = mapped;
  pool->bytes_ = mapped;
  return pool;
}

HostPool::~HostPool() {
  if (data_ == nullptr) return;
  if (pinning_ == Pinning::kBackend) {
    backend_->free_pinned_host(data_);
  } else {
    munmap(map_base_, map_bytes_);  // also unlocks
  }
}

Result<char*> HostPool::carve(uint64_t bytes, uint64_t align, const char* what) {
  TS_CHECK(align > 0 && (align & (align - 1)) == 0) << "alignment " << align;
  const uint64_t start = (carved_ + align - 1) / align * align;
  if (start > bytes_ || bytes > bytes_ - start) {
    return resource_exhausted(std::string("host tier: ") + what + " needs " + format_bytes(bytes) +
                              " but only " + format_bytes(start > bytes_ ? 0 : bytes_ - start) +
                              " of " + format_bytes(bytes_) + " is left");
  }
  carved_ = start + bytes;
  return data_ + start;
}

}  // namespace tierserve

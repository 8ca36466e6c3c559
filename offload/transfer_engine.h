// TransferEngine: asynchronous moves between tiers with completion tracking (DESIGN.md §2, §4).
// Device <-> host copies run on copy threads (on the CPU backend, memcpy through
// Backend::copy, so the whole tier logic runs in CI; CUDA copy streams and events replace them
// in the CUDA backend's issue); disk reads and writes run on one I/O thread that owns the
// DiskStore and its io_uring ring. Callers get a ticket per transfer and wait on it; a ticket's
// buffers must stay untouched (and its blocks pinned, DESIGN.md §6 invariant 5) until it
// completes.
//
// Thread-safety: every method may be called from any thread, but each ticket is waited on (or
// released) by one thread, once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>

#include "common/status.h"
#include "kernels/backend.h"
#include "offload/disk_store.h"

namespace tierserve {

// Identifies one transfer; 0 is never a valid ticket.
using TransferTicket = uint64_t;

struct TransferEngineOptions {
  int32_t copy_threads = 1;  // threads doing device <-> host copies, 1..16
  Status validate() const;
};

// Where a disk read's bytes go after it (TransferEngine::disk_read, file_read).
struct ForwardCopy {
  void* dst = nullptr;       // null: nowhere, the read's destination is final
  uint64_t after_fence = 0;  // compute fence the copy waits for (Backend::record_fence)
};

// Running totals, for benchmarks and the start-up report.
struct TransferStats {
  uint64_t copies = 0, copy_bytes = 0;             // completed device <-> host copies
  uint64_t disk_writes = 0, disk_write_bytes = 0;  // completed writes (ok or not)
  uint64_t disk_reads = 0, disk_read_bytes = 0;    // completed extent and file reads
  uint64_t failures = 0;                           // transfers that completed with an error
  int64_t max_disk_in_flight = 0;                  // most disk operations submitted at once
};

class TransferEngine {
 public:
  // `backend` (which must outlive the engine) does the copies. `disk` may be null (no disk
  // tier); otherwise the engine takes it over: its files must be opened and its buffers
  // registered before this call, and from now on only the engine's I/O thread touches it. All
  // of its extents are handed out through allocate_extent() below.
  static Result<std::unique_ptr<TransferEngine>> create(Backend* backend,
                                                        std::unique_ptr<DiskStore> disk,
                                                        const TransferEngineOptions& options = {});
  // Waits for every transfer in flight, then stops the threads (and closes the disk store).
  ~TransferEngine();
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  bool has_disk() const { return extent_bytes_ > 0; }
  uint64_t extent_bytes() const { return extent_bytes_; }  // 0 without a disk tier

  // Disk extents (metadata only): kResourceExhausted when the disk tier is full or absent.
  Result<int64_t> allocate_extent();
  void free_extent(int64_t extent);  // no transfer on it may be in flight
  int64_t num_free_extents() const;
  int64_t num_extents() const;

  // Copies `bytes` between device and host memory, either direction (Backend::copy), once the
  // compute stream has passed `after_fence` (Backend::record_fence; 0: at once), so that a copy
  // may be queued into memory that compute still reads.
  TransferTicket copy(void* dst, const void* src, size_t bytes, uint64_t after_fence = 0);
  // DiskStore::submit_write / submit_read / submit_file_read, on the I/O thread. A read with
  // `then.dst` set lands in `dst` (host memory: a bounce buffer) and, once it has completed and
  // passed its checksum, is copied on to then.dst (device memory) by a copy thread, after the
  // compute fence then.after_fence; its ticket completes with that copy. A failed read is not
  // copied on.
  TransferTicket disk_write(int64_t extent, const void* src, uint64_t bytes);
  TransferTicket disk_read(int64_t extent, void* dst, uint64_t bytes, ForwardCopy then = {});
  TransferTicket file_read(int32_t file, uint64_t offset, void* dst, uint64_t bytes,
                           std::optional<uint32_t> expected_crc = std::nullopt,
                           ForwardCopy then = {});

  // Whether `ticket` has completed (does not consume it).
  bool done(TransferTicket ticket) const;
  // Whether `ticket` has completed successfully (does not consume it).
  bool done_ok(TransferTicket ticket) const;
  // Blocks until `ticket` completes and returns its status (a disk error, a checksum
  // mismatch); the ticket is then forgotten.
  Status wait(TransferTicket ticket);
  // wait() on each; returns the first error, after waiting for all of them.
  Status wait_all(std::span<const TransferTicket> tickets);
  // Transfers submitted and not yet waited for.
  int64_t pending() const;
  TransferStats stats() const;

 private:
  struct Impl;
  explicit TransferEngine(std::unique_ptr<Impl> impl, uint64_t extent_bytes);
  std::unique_ptr<Impl> impl_;
  uint64_t extent_bytes_ = 0;
};

}  // namespace tierserve

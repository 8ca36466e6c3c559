// IoRing: one io_uring instance (liburing) with fixed buffers and a table of fixed files, reduced
// to what DiskStore needs: prepare reads and writes, submit, and reap completions.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

struct io_uring;

namespace tierserve {

enum class IoKind : uint8_t { kRead, kWrite };

// One reaped completion: the user_data given to prepare() and the kernel's result (bytes
// transferred, or -errno).
struct IoResult {
  uint64_t user_data = 0;
  int32_t res = 0;
};

// Owns the ring; closing it (destruction) cancels nothing that is in flight, so the owner must
// reap every prepared operation first. Not thread-safe. Non-copyable.
class IoRing {
 public:
  // A ring with at least `entries` submission entries (1..4096) and twice as many completion
  // entries, whose file table has `file_slots` empty slots (io_uring_register_files_sparse:
  // Linux 5.19 or later). Errors name the failed call and errno.
  static Result<std::unique_ptr<IoRing>> create(uint32_t entries, uint32_t file_slots);
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // Registers `buffers` as the ring's fixed buffers (io_uring_register_buffers); buffer i is then
  // `buf_index` i in prepare(). ENOMEM (RLIMIT_MEMLOCK) is kResourceExhausted.
  Status register_buffers(std::span<const iovec> buffers);
  // Puts `fd` into file slot `slot` (io_uring_register_files_update); -1 empties the slot.
  Status set_file(uint32_t slot, int fd);

  // Prepares one read or write of `len` bytes at `offset` of the file in `slot`, from or into
  // `buf` (which must lie inside fixed buffer `buf_index` when that is >= 0: the fixed opcodes
  // are used then). Nothing reaches the kernel before submit(). The caller keeps at most
  // `entries` operations prepared or in flight, so a free submission entry always exists.
  void prepare(IoKind kind, uint32_t slot, void* buf, uint32_t len, uint64_t offset,
               int32_t buf_index, uint64_t user_data);
  // Submits what was prepared and, when `wait_for` > 0, waits until that many completions are
  // available. EINTR, EAGAIN and EBUSY are retried; any other error means a malformed
  // submission entry or a broken ring (a bug) and aborts.
  void submit(uint32_t wait_for);
  // Appends every completion available now to `out` (up to `max`), without blocking; returns
  // how many.
  uint32_t reap(IoResult* out, uint32_t max);

 private:
  IoRing() = default;
  std::unique_ptr<io_uring> ring_;
  bool initialized_ = false;
};

}  // namespace tierserve

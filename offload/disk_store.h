// DiskStore: the NVMe tier (DESIGN.md §2). Fixed-size extents in one preallocated file, read and
// written asynchronously through io_uring with O_DIRECT, registered buffers and registered files;
// every stored extent carries a CRC32C that each read checks. Also reads external read-only files
// (a model's safetensors) through the same ring.
//
// Layout: one file, `extents`, in a private directory (mode 0700, named
// tierserve-offload-<pid>-<unique>) created inside DiskStoreOptions::dir; extent i lives at offset
// i * extent_bytes. The file is created 0600, preallocated with fallocate, and removed with the
// directory by ~DiskStore. A private directory whose process no longer exists (killed before
// its destructors ran) is removed by the next DiskStore created in the same directory.
//
// O_DIRECT: when the file system refuses it (open fails with EINVAL), the store falls back to
// buffered I/O and says so with TS_LOG(Warning); direct_io() reports which mode is in use. Data
// stays correct and checksummed either way; only the page cache is no longer bypassed. The same
// rule applies per file to open_file().
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "offload/io_ring.h"

namespace tierserve {

struct DiskStoreOptions {
  std::filesystem::path dir;    // --offload-dir: must exist and be writable; a private directory
                                // (mode 0700, unique name) is created inside it and removed, with
                                // its files, by ~DiskStore
  uint64_t capacity_bytes = 0;  // bytes of extents to preallocate (fallocate); >= extent_bytes.
                                // num_extents = capacity_bytes / extent_bytes (rounded down)
  uint64_t extent_bytes = 0;    // bytes per extent: a positive multiple of 4096, <= 1 GiB
  int32_t queue_depth = 64;     // io_uring submission queue entries, 1..4096: operations in the
                                // kernel at once (more queue in user space)
  bool direct_io = true;        // O_DIRECT; false forces buffered I/O (see the file comment)
  Status validate() const;      // kInvalidArgument naming the field
};

// Which operation a completion belongs to.
enum class DiskOp : uint8_t { kWrite, kRead, kFileRead };

// One finished operation. status: ok; kDataLoss for a CRC mismatch or a short read (naming the
// extent or file, offset and sizes); kResourceExhausted for ENOSPC, EDQUOT and EFBIG; kIoError
// for EIO, a short write and any other errno, with strerror text. Never ok for bad data.
struct DiskCompletion {
  uint64_t ticket = 0;
  DiskOp op = DiskOp::kRead;
  Status status;
};

// Test-only fault injection: consulted when an operation completes; a non-kNone fault replaces
// the real result. kEnospc/kEio: as if the kernel had returned -ENOSPC/-EIO. kShortRead: as if
// 4096 fewer bytes (or none, for a single page) had been transferred; on a write that is a short
// write. kCorrupt on a read: flips a byte of the data that was read, so the CRC check must catch
// it (a file read without an expected CRC has nothing to check against, so it goes unnoticed by
// design); on a write: records a checksum that differs from the data, as if the bytes on disk had
// changed afterwards, so the next read of the extent fails its check. The real error paths handle
// the injected values: there is no separate code path.
enum class DiskFault : uint8_t { kNone, kEnospc, kEio, kShortRead, kCorrupt };
using DiskFaultHook = std::function<DiskFault(DiskOp op, int64_t extent_or_file, uint64_t ticket)>;

// Not thread-safe: one thread at a time (the transfer engine's I/O thread owns it). Non-copyable.
class DiskStore {
 public:
  // Errors name the directory and the cause: kNotFound when it is missing; kInvalidArgument when
  // it is not a directory or not writable; kResourceExhausted when fallocate cannot reserve the
  // capacity (ENOSPC, EFBIG); kIoError for other failures (io_uring unavailable, fallocate not
  // supported). On error nothing is left behind in `dir`.
  static Result<std::unique_ptr<DiskStore>> create(const DiskStoreOptions& options);
  ~DiskStore();  // waits for in-flight I/O, closes every file, removes the private directory
  DiskStore(const DiskStore&) = delete;
  DiskStore& operator=(const DiskStore&) = delete;

  int64_t num_extents() const { return static_cast<int64_t>(extents_.size()); }
  int64_t num_free_extents() const { return static_cast<int64_t>(free_extents_.size()); }
  uint64_t extent_bytes() const { return options_.extent_bytes; }
  // Extent ids are metadata only: allocate returns kResourceExhausted when none is free. The
  // most recently freed extent is reused first.
  Result<int64_t> allocate_extent();
  // TS_CHECK: allocated, and no I/O in flight on it. Forgets the extent's checksum.
  void free_extent(int64_t extent);
  // Whether the extent's last write completed successfully, so that it may be read.
  bool has_data(int64_t extent) const;

  // Host buffers (page-aligned address and length) that I/O will use; registered with io_uring as
  // fixed buffers, and reads/writes wholly inside one use the fixed opcodes. Call at most once,
  // with nothing in flight. Unregistered memory still works (plain opcodes) as long as it meets
  // the O_DIRECT alignment (address, length: multiples of 4096). Errors: kResourceExhausted when
  // RLIMIT_MEMLOCK is too small, kIoError otherwise. Performance: back buffers with huge pages
  // (madvise(MADV_HUGEPAGE) on 2 MiB-aligned memory) so that a large I/O is one device request;
  // with 4 KiB pages a 1 MiB I/O has 256 segments, which virtio-blk (max_segments 254) splits,
  // and reads ran at a third of the speed (benchmarks/results/disk_*.md).
  Status register_buffers(std::span<const iovec> buffers);

  // Asynchronous I/O; each returns a ticket (1, 2, 3, ... in submission order). `bytes` > 0,
  // <= extent_bytes, a multiple of 4096; the buffer 4096-aligned and untouched until the ticket
  // completes. A write needs an allocated extent with nothing in flight on it; it records the
  // CRC32C of `src` (computed here, at submission) as the extent's checksum once it completes
  // successfully, and until then the extent has no data. A read must ask for exactly the bytes
  // last written and checks them against that checksum. Reading an extent without data
  // (has_data() false) is a TS_CHECK failure (a bug). Operations start at the next poll()/wait().
  uint64_t submit_write(int64_t extent, const void* src, uint64_t bytes);
  uint64_t submit_read(int64_t extent, void* dst, uint64_t bytes);

  // Read-only external files (a model's safetensors), opened with O_DIRECT and registered with
  // the ring; at most 1023 per store (kResourceExhausted beyond). kNotFound for a missing file,
  // kInvalidArgument for something that is not a regular file, kIoError otherwise. Files stay
  // open until the store is destroyed.
  Result<int32_t> open_file(const std::filesystem::path& path);
  // Reads [offset, offset + bytes) of `file`: offset, bytes (> 0, <= 1 GiB) and dst
  // 4096-aligned, and offset < the file's size at open_file (the caller reads an aligned
  // superset of what it needs). Where the range runs past the end of the file, only the bytes up
  // to the end are read (fewer is a short read: kDataLoss) and the rest of dst is zeroed.
  // `expected_crc`, when given, is the CRC32C of the file's bytes in the range (up to its end)
  // and is checked like an extent's.
  uint64_t submit_file_read(int32_t file, uint64_t offset, void* dst, uint64_t bytes,
                            std::optional<uint32_t> expected_crc = std::nullopt);

  // Submits queued operations and returns those that completed since the last call, without
  // blocking (poll) or blocking until at least one is available when any is in flight (wait;
  // returns at once, empty, when nothing is). More operations than queue_depth may be submitted:
  // the rest queue in user space and enter the kernel as earlier ones complete. Checksums are
  // verified here, on the calling thread.
  std::vector<DiskCompletion> poll();
  std::vector<DiskCompletion> wait();
  // Operations submitted and not yet returned by poll() or wait().
  int64_t in_flight() const;

  void set_fault_hook_for_testing(DiskFaultHook hook);
  const std::filesystem::path& directory() const { return private_dir_.path; }  // private dir
  std::filesystem::path extent_file_path() const;  // the extents file inside directory()
  bool direct_io() const { return direct_io_; }    // false after the buffered fallback

 private:
  // Removes its directory and everything in it when destroyed (if set).
  struct PrivateDir {
    std::filesystem::path path;
    ~PrivateDir();
  };
  struct Extent {
    bool allocated = false;
    bool has_data = false;  // the last write completed successfully: crc and bytes are valid
    uint32_t crc = 0;       // CRC32C of the `bytes` bytes last written
    uint64_t bytes = 0;
    int32_t in_flight = 0;  // operations submitted on it and not yet completed
  };
  struct ExternalFile {
    std::filesystem::path path;
    int fd = -1;
    uint64_t size = 0;  // at open_file
  };
  // One submitted operation, from submit_* until its completion is returned.
  struct Op {
    uint64_t ticket = 0;
    DiskOp op = DiskOp::kRead;
    int64_t target = 0;  // extent id, or file id for kFileRead
    uint8_t* buf = nullptr;
    uint32_t bytes = 0;           // requested length
    uint32_t expected = 0;        // length the kernel must transfer (< bytes only at end of file)
    uint64_t offset = 0;          // in the file
    int32_t buf_index = -1;       // fixed buffer holding [buf, buf + bytes), or -1
    std::optional<uint32_t> crc;  // write: of the source; read: to check against
    int32_t res = 0;              // the kernel's result, once completed
  };

  explicit DiskStore(const DiskStoreOptions& options);
  Status init();
  int32_t find_buffer(const void* p, uint64_t bytes) const;
  uint64_t enqueue(Op op);
  // Moves completions from the ring into done_ and queued operations into the ring; blocks for
  // at least one completion when `block` and none is ready.
  void pump(bool block);
  DiskCompletion finish(Op& op);
  std::string describe(const Op& op) const;

  DiskStoreOptions options_;
  PrivateDir private_dir_;  // declared first: removed last, after every file is closed
  int fd_ = -1;             // the extents file
  bool direct_io_ = true;
  std::unique_ptr<IoRing> ring_;
  std::vector<Extent> extents_;
  std::vector<int64_t> free_extents_;  // a stack
  std::vector<ExternalFile> files_;    // file id i is ring file slot i + 1 (slot 0: extents)
  std::vector<iovec> buffers_;         // registered, sorted by address
  std::vector<int32_t> buffer_index_;  // ring index of buffers_[i]
  bool buffers_registered_ = false;
  std::vector<Op> slots_;  // operations in the kernel, by user_data
  std::vector<uint32_t> free_slots_;
  std::deque<Op> queued_;         // submitted, waiting for a free slot
  std::vector<Op> done_;          // completed by the kernel, not yet returned
  std::vector<IoResult> reaped_;  // scratch for IoRing::reap
  uint64_t next_ticket_ = 1;
  DiskFaultHook fault_hook_;
};

}  // namespace tierserve

// WeightStreamer: a WeightProvider that serves resident units from a device arena and streamed
// units through a ring of device staging slots (DESIGN.md §2, §7). Streamed units live in the
// host tier (in the device layout, copied with TransferEngine::copy) or on disk: read in place
// from the checkpoint's own files (O_DIRECT, TransferEngine::file_read; each read checked
// against a CRC32C taken when create() first reads it) or from a one-time copy in
// --offload-dir (DiskStore extents, CRC-checked, TransferEngine::disk_read).
//
// Pipeline: streamed units are used in execution order, cyclically (the last streamed unit of a
// step is followed by the first of the next). The ring has min(prefetch_depth + 1, streamed
// units) slots. acquire(u) waits only for u's own transfers, then tops the pipeline up so that
// prefetch_depth units are in flight ahead of it; release(u) frees u's slot (and tops up). An
// acquire out of that order (after a failed step, or in tests) waits for what is in flight,
// discards it, and restarts the pipeline at u. A failed transfer is read again (kReadAttempts
// times in all, so that a transient I/O error costs only time); if it still fails, acquire
// returns the error and the bytes are never used; the next acquire of the unit reads it again.
// release(u) records a compute fence (Backend::record_fence) for u's slot, and copies into the
// slot wait for it, so that a slot is refilled only once the compute that read it has completed
// (free on the CPU backend, whose ops complete before returning). Disk reads land in the slot
// itself where the device tier is host memory (the CPU backend); elsewhere in a pinned bounce
// buffer of the slot's size, from which a copy thread carries them on (TransferEngine's
// ForwardCopy).
//
// Thread-safety: acquire/release/stats from the engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/topology.h"
#include "kernels/backend.h"
#include "offload/disk_store.h"
#include "offload/host_pool.h"
#include "offload/planner.h"
#include "offload/transfer_engine.h"
#include "offload/weight_provider.h"

namespace tierserve {

// One read of a disk-streamed unit from an external file: [offset, offset + bytes) of
// WeightStreamerOptions::files[file] lands at slot_offset in the unit's staging slot. offset,
// bytes and slot_offset are multiples of 4096 (DiskStore::submit_file_read).
struct FileRead {
  int32_t file = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  uint64_t slot_offset = 0;
};

// Writes a unit's device-layout image (image_bytes at `dst`, 4096-aligned host memory) and
// returns its views, which must point into [dst, dst + image_bytes) or stay as they are for
// the whole run (absent tensors: null data; resident memory such as a tied embedding).
using UnitImageWriter = std::function<Result<WeightUnit>(char* dst)>;

// How the streamer gets one unit.
struct StreamedUnit {
  WeightTier tier = WeightTier::kDevice;
  // kDevice: the unit's views into the resident arena. kDisk with file_reads: the views, with
  // slot_offsets giving where each tensor lands in the slot. Otherwise filled from write_image.
  WeightUnit unit;
  // Per tensor of `unit`: byte offset of its data in the staging slot, or kKeepView for a view
  // that acquire leaves as it is. Only for kDisk with file_reads.
  std::vector<int64_t> slot_offsets;
  // kHost and kDisk without file_reads: the image, written once at create (into the host pool,
  // or into a temporary buffer that is copied to --offload-dir extents and freed).
  uint64_t image_bytes = 0;
  UnitImageWriter write_image;
  // kDisk in place: the reads that fill the slot.
  std::vector<FileRead> file_reads;
};
inline constexpr int64_t kKeepView = -1;

struct WeightStreamerOptions {
  int32_t prefetch_depth = 2;                // --offload-prefetch-depth, 1..64
  std::filesystem::path offload_dir;         // --offload-dir; required with a disk unit
  std::vector<std::filesystem::path> files;  // FileRead::file indexes these (read-only)
  uint64_t extent_bytes = 4 * 1024 * 1024;   // one-time copy extents; multiple of 4096
  int32_t queue_depth = 64;                  // --offload-queue-depth: io_uring entries
  int32_t copy_threads = 1;                  // TransferEngine copy threads; each host unit is
                                             // split into this many copies
  const Topology* topology = nullptr;        // NUMA placement of the host pool; may be null
  DiskFaultHook fault_hook_for_testing;      // installed on the streamer's DiskStore
  Status validate() const;
};

// Bytes a unit of `image_bytes` takes under --offload-dir as a one-time copy.
inline uint64_t disk_copy_bytes(uint64_t image_bytes, uint64_t extent_bytes) {
  return (image_bytes + extent_bytes - 1) / extent_bytes * extent_bytes;
}

// Per-step figures for benchmarks; reset with reset_stats().
struct StreamStats {
  int64_t acquires = 0;           // all acquires
  int64_t streamed_acquires = 0;  // acquires of streamed units
  int64_t stalls = 0;             // streamed acquires whose transfer had not completed
  double stall_seconds = 0;       // time acquire spent waiting for transfers
  uint64_t host_bytes = 0;        // bytes copied host -> slot (completed transfers)
  uint64_t disk_bytes = 0;        // bytes read disk -> slot (completed transfers)
  int64_t retries = 0;            // transfers read again after a failure
  int64_t failures = 0;           // streamed acquires that returned an error
  int64_t restarts = 0;           // out-of-order acquires that restarted the pipeline
};

class WeightStreamer : public WeightProvider {
 public:
  static constexpr int32_t kReadAttempts = 3;  // per streamed acquire, before it fails

  // Takes ownership of `arena` (resident units' memory from `backend`, may be null), fills the
  // host tier and the one-time disk copies, allocates the staging ring and starts the first
  // prefetches. `backend` must outlive the streamer. Errors: a bad option, a tier that cannot
  // be allocated, a file that cannot be opened, a failed image writer or disk write.
  static Result<std::unique_ptr<WeightStreamer>> create(Backend* backend,
                                                        std::vector<StreamedUnit> units,
                                                        void* arena, uint64_t arena_bytes,
                                                        const WeightStreamerOptions& options);
  // Waits for every transfer in flight, then frees the ring, the host pool and the arena.
  ~WeightStreamer() override;
  WeightStreamer(const WeightStreamer&) = delete;
  WeightStreamer& operator=(const WeightStreamer&) = delete;

  int32_t num_units() const override { return static_cast<int32_t>(units_.size()); }
  Result<const WeightUnit*> acquire(int32_t unit) override;
  void release(int32_t unit) override;
  // Resident arena plus the staging ring.
  uint64_t device_bytes() const override { return arena_bytes_ + ring_bytes_; }

  WeightTier tier(int32_t unit) const { return units_[static_cast<size_t>(unit)].tier; }
  int32_t num_slots() const { return static_cast<int32_t>(slots_.size()); }
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint64_t host_pool_bytes() const { return host_pool_ == nullptr ? 0 : host_pool_->bytes(); }
  // Units whose transfer is issued and not yet acquired.
  int32_t in_flight() const { return static_cast<int32_t>(queue_.size()); }
  int32_t free_slots() const { return static_cast<int32_t>(free_slots_.size()); }
  // Whether the disk store reads with O_DIRECT (false after its buffered fallback).
  bool disk_direct_io() const { return disk_direct_io_; }

  const StreamStats& stats() const { return stats_; }
  void reset_stats() { stats_ = StreamStats{}; }

 private:
  struct Unit {
    WeightTier tier = WeightTier::kDevice;
    WeightUnit view;                    // returned by acquire (streamed: re-pointed per slot)
    std::vector<int64_t> slot_offsets;  // streamed: per tensor, or kKeepView
    uint64_t bytes = 0;                 // streamed: bytes one transfer moves
    const char* host_image = nullptr;   // kHost: in the host pool
    std::vector<int64_t> extents;       // kDisk copy: extents holding the image, in order
    std::vector<FileRead> file_reads;   // kDisk in place
    std::vector<uint32_t> file_crcs;    // kDisk in place: per read, CRC32C taken at create
    bool held = false;                  // between acquire and release
    bool queued = false;                // in queue_
    int32_t slot = -1;                  // streamed and held or queued: its slot
  };
  struct InFlight {
    int32_t unit = 0;
    std::vector<TransferTicket> tickets;
  };

  WeightStreamer(Backend* backend, void* arena, uint64_t arena_bytes, int32_t prefetch_depth);
  Status fill_tiers(std::vector<StreamedUnit>& units, const WeightStreamerOptions& options);
  Status write_disk_copies(std::vector<StreamedUnit>& units);
  // Reads every in-place unit once and records a CRC32C per read, which every later read of
  // it is checked against (safetensors files carry no checksums of their own).
  Status checksum_in_place_reads();
  void issue(int32_t unit);  // starts `unit`'s transfer into a free slot
  // Starts the transfers that fill `unit`'s slot; with `to_device` false, disk reads stop in the
  // slot's bounce buffer (where there is one).
  std::vector<TransferTicket> start_transfer(const Unit& unit, bool to_device = true);
  void top_up();
  void drain();  // waits for and discards everything in flight
  char* slot_data(int32_t slot) const { return slots_[static_cast<size_t>(slot)]; }
  // Where disk reads for `slot` land: its bounce buffer, or the slot itself.
  char* read_dst(int32_t slot) const {
    return bounce_slots_.empty() ? slot_data(slot) : bounce_slots_[static_cast<size_t>(slot)];
  }

  Backend* backend_;
  void* arena_;
  uint64_t arena_bytes_;
  int32_t prefetch_depth_;
  int32_t copy_threads_ = 1;
  uint64_t extent_bytes_ = 0;
  std::vector<Unit> units_;
  std::vector<int32_t> streamed_;  // streamed unit ids in execution order
  size_t next_ = 0;                // index in streamed_ of the next unit to issue
  std::unique_ptr<HostPool> host_pool_;
  void* ring_ = nullptr;  // the staging slots, one device allocation
  uint64_t ring_bytes_ = 0;
  uint64_t slot_bytes_ = 0;
  std::vector<char*> slots_;
  std::vector<int32_t> free_slots_;
  std::vector<uint64_t> slot_fences_;  // per slot: the fence after the compute that last read it
  // Disk reads where the device tier is not host memory: one pinned bounce buffer per slot.
  std::unique_ptr<HostPool> bounce_pool_;
  std::vector<char*> bounce_slots_;
  std::deque<InFlight> queue_;        // issued, not yet acquired, in issue order
  std::vector<int32_t> file_ids_;     // DiskStore file id of options.files[i]
  std::vector<uint64_t> file_sizes_;  // size of options.files[i] when opened
  bool disk_direct_io_ = false;
  std::unique_ptr<TransferEngine> engine_;  // declared last: destroyed first
  StreamStats stats_;
};

}  // namespace tierserve

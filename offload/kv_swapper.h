// KvSwapper: moves whole KV blocks (all layers, contiguous; DESIGN.md §2) between the device
// tier and the lower tiers when the scheduler preempts a sequence by swapping, and back when it
// resumes. Blocks go to the host tier first (--kv-offloading-size) and, when it is full, to the
// disk tier behind it (io_uring extents, CRC-checked on every read). Engine thread only.
//
// A step's moves are done together by move(), batched: all copies of a direction in flight at
// once, disk reads and writes submitted together.
//
// Pinning (DESIGN.md §6 invariant 5): a disk write reads a host staging buffer, never the
// device block, so move() returns as soon as every device block has been read and the
// scheduler may reuse them; the staging buffer and the extent stay pinned until the write
// completes, and a swapped block on disk is read back only after its write has completed
// successfully. A failed write or read is reported for the swap-in or restore that needed it
// (the caller then recomputes that sequence); nothing is silently wrong.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "kernels/paged_kv.h"
#include "memory/block_hash.h"
#include "memory/kv_cache_manager.h"
#include "offload/host_pool.h"
#include "offload/transfer_engine.h"

namespace tierserve {

// Where one swapped-out block lives.
struct SwapSlot {
  bool on_disk = false;  // false: a host-tier slot; true: a disk extent
  int32_t index = -1;    // host slot, or disk extent id
};

// Room for swapped blocks, and the lower tiers' part of the prefix cache, as the scheduler sees
// them (engine/scheduler.h).
class SwapSpace {
 public:
  virtual ~SwapSpace() = default;
  // Blocks that swap_out could place right now.
  virtual int32_t num_free_swap_blocks() const = 0;
  // Whether a block of content `hash` is stored in a lower tier, its store completed, so that a
  // prefix hit may restore it.
  virtual bool has_prefix_block(const BlockHash& hash) const {
    (void)hash;
    return false;
  }
};

struct KvSwapperOptions {
  int32_t num_host_blocks = 0;  // host-tier slots (--kv-offloading-size / block bytes)
  int32_t num_staging = 8;      // host staging buffers for disk transfers (when there is a disk)
};

// Running totals, for tests and the engine's statistics.
struct KvSwapStats {
  int64_t blocks_out = 0, blocks_in = 0;            // blocks swapped out / in
  int64_t disk_blocks_out = 0, disk_blocks_in = 0;  // of which through the disk tier
  int64_t failures = 0;                             // swap-ins that failed (then recomputed)
  int64_t prefix_spilled = 0;                       // evicted prefix blocks stored below
  int64_t prefix_restored = 0;                      // of which restored on a later hit
  // Bytes submitted per direction (swaps and prefix spills/restores; a disk extent moves
  // through a host staging buffer, so it counts in both of its legs).
  uint64_t bytes_device_to_host = 0, bytes_host_to_device = 0;
  uint64_t bytes_host_to_disk = 0, bytes_disk_to_host = 0;
};

// One step's KV moves (KvSwapper::move). Spans point into the caller's plan and stay valid
// for the call.
struct KvStepMoves {
  // A preempted sequence's device blocks, to be copied out: host slots first, then disk
  // extents, reclaiming unpinned prefix entries (least recently used first) when needed.
  std::vector<std::span<const int32_t>> swap_outs;
  // Device blocks evicted from the prefix cache, to be copied down (best effort: to a free
  // host slot, else a free disk extent, else in place of the least recently used unpinned
  // stored prefix block; nothing when the hash is already stored). Swap-outs come first.
  std::vector<EvictedBlock> spills;
  // A resuming sequence's slots, copied into fresh device blocks (same length) and then freed,
  // also on error.
  struct SwapIn {
    std::span<SwapSlot> slots;
    std::span<const int32_t> device_blocks;
  };
  std::vector<SwapIn> swap_ins;
  // Stored prefix blocks copied into fresh device blocks (same length); the entries stay
  // stored, and are pinned (never reclaimed) while this step's out-moves make room.
  struct Restore {
    std::span<const BlockHash> hashes;
    std::span<const int32_t> device_blocks;
  };
  std::vector<Restore> restores;
};

// Outcomes of KvStepMoves, index for index. A swap-out error (kInternal: no room, or a failed
// copy) places nothing. A swap-in or restore error (a failed write or read, a checksum
// mismatch) means its device blocks hold garbage: the caller must recompute that sequence.
struct KvStepResult {
  std::vector<Result<std::vector<SwapSlot>>> swap_outs;
  std::vector<Status> swap_ins;
  std::vector<Status> restores;
};

class KvSwapper : public SwapSpace {
 public:
  // Carves the host slots (and, with a disk tier, the staging buffers) from `host`.
  // `transfers` does the copies; its disk store, if any, must have extents of at least one
  // block (rounded up to 4096 bytes). `device`, `host` and `transfers` must outlive the swapper.
  static Result<std::unique_ptr<KvSwapper>> create(const KvCacheView& device, HostPool* host,
                                                   TransferEngine* transfers,
                                                   const KvSwapperOptions& options);
  // Waits for pending disk writes.
  ~KvSwapper() override;
  KvSwapper(const KvSwapper&) = delete;
  KvSwapper& operator=(const KvSwapper&) = delete;

  int32_t num_free_swap_blocks() const override;
  bool has_prefix_block(const BlockHash& hash) const override;

  // Does one step's moves, batched (DESIGN.md §2): first every out-move (swap-outs, then prefix
  // spills: they read device blocks that the scheduler may already have given to others in
  // this step), their copies all in flight at once and their disk writes submitted together;
  // then every in-move (swap-ins and prefix restores), their disk reads submitted together
  // (as many as there are staging buffers at a time), then their copies. Returns once every
  // device block has been read and written; disk writes complete in the background (their
  // staging buffers and extents stay pinned until then). Outcomes are per sequence, so that
  // one failed move makes only its own sequence recompute.
  KvStepResult move(const KvStepMoves& moves);
  // Frees slots without reading them (an aborted or recomputed sequence).
  void release(std::span<SwapSlot> slots);
  // Waits for every disk write in flight, so that extents released meanwhile are free again
  // (for leak checks, and before the engine idles).
  void drain();

  int32_t num_prefix_blocks() const { return static_cast<int32_t>(prefix_.size()); }

  int32_t num_host_blocks() const { return static_cast<int32_t>(host_slot_used_.size()); }
  int32_t num_used_host_blocks() const { return used_host_; }
  int32_t num_used_disk_blocks() const { return used_disk_; }
  const KvSwapStats& stats() const { return stats_; }

 private:
  KvSwapper(const KvCacheView& device, TransferEngine* transfers)
      : device_(device), transfers_(transfers) {}
  char* host_slot(int32_t i) const { return host_base_ + static_cast<size_t>(i) * block_bytes_; }
  char* staging(int32_t i) const { return staging_base_ + static_cast<size_t>(i) * extent_bytes_; }
  // What is known of a disk extent's contents.
  enum class ExtentState : uint8_t { kFree, kWriting, kStored, kFailed };

  struct HashOf {
    size_t operator()(const BlockHash& h) const { return static_cast<size_t>(short_hash(h)); }
  };
  struct PrefixEntry {
    SwapSlot slot;
    std::list<BlockHash>::iterator lru;
    int32_t pins = 0;  // > 0: not to be reclaimed
  };

  // One block of a step's moves: device block `block` to or from `slot`; its outcome goes to
  // *status (the first error of its sequence wins).
  struct BlockMove {
    int32_t block = -1;
    SwapSlot slot;
    Status* status = nullptr;
  };

  // A free host slot, else a free disk extent, else (when `reclaim`) the slot of the least
  // recently used unpinned prefix entry; marked used. false when there is none.
  bool take_slot(bool reclaim, SwapSlot* slot);
  // Takes slots for one swap-out; kInternal (nothing taken) without room for all of them.
  Result<std::vector<SwapSlot>> place(std::span<const int32_t> device_blocks);
  // Takes a slot for a spilled prefix block and records its entry, pinned until the step's
  // copies are done; false when it is stored already or there is no room.
  bool place_spill(const EvictedBlock& e, SwapSlot* slot);
  // Copies each move's device block out to its slot: host copies all in flight at once; disk
  // blocks through staging buffers, as many at a time as there are buffers, their writes then
  // submitted and left to complete in the background.
  void copy_out(std::span<const BlockMove> moves);
  // Copies each move's slot into its device block: host copies all in flight at once; disk
  // extents (once their write has completed) read into staging buffers, as many at a time as
  // there are buffers, then copied.
  void copy_in(std::span<const BlockMove> moves);
  // Pins (delta +1) or unpins (-1) stored prefix blocks: a pinned one is never reclaimed.
  void pin_prefix(std::span<const BlockHash> hashes, int32_t delta);
  // Drops the least recently used unpinned prefix entry, its slot free at once; false if none.
  bool drop_lru_prefix();
  // A staging buffer with no write in flight and not reserved, finishing a write if every
  // unreserved buffer has one; reserved for the caller. At least one must be unreserved.
  int32_t take_staging();
  // Waits for staging buffer `s`'s write and records its outcome in its extent's state.
  void finish_staging(int32_t s);
  // finish_staging() on every write that has already completed; never blocks.
  void reap();
  void free_slot(const SwapSlot& slot);

  KvCacheView device_;
  TransferEngine* transfers_;
  size_t block_bytes_ = 0;
  uint64_t extent_bytes_ = 0;  // block bytes rounded up to 4096 (disk transfers)
  char* host_base_ = nullptr;
  std::vector<uint8_t> host_slot_used_;
  std::vector<int32_t> free_host_;  // LIFO
  int32_t used_host_ = 0, used_disk_ = 0;
  char* staging_base_ = nullptr;
  std::vector<TransferTicket> staging_ticket_;  // per staging buffer: its write in flight, or 0
  std::vector<uint8_t> staging_reserved_;       // per staging buffer: taken by the step's moves
  std::vector<int64_t> staging_extent_;         // per staging buffer: the extent it writes
  std::vector<Status> extent_error_;            // per extent: why its write failed (kFailed)
  std::vector<ExtentState> extent_state_;       // per extent
  std::vector<int32_t> extent_staging_;         // per extent: its staging buffer while kWriting
  int32_t next_staging_ = 0;                    // round robin, so the oldest write is next
  std::unordered_map<BlockHash, PrefixEntry, HashOf> prefix_;  // spilled prefix blocks
  std::list<BlockHash> prefix_lru_;                            // most recently used first
  int32_t pinned_prefix_ = 0;                                  // entries with pins > 0
  KvSwapStats stats_;
};

}  // namespace tierserve

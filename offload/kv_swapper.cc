#include "offload/kv_swapper.h"

#include <algorithm>
#include <string>

#include "common/check.h"
#include "common/units.h"

namespace tierserve {
namespace {

constexpr uint64_t kDiskAlign = 4096;

}  // namespace

Result<std::unique_ptr<KvSwapper>> KvSwapper::create(const KvCacheView& device, HostPool* host,
                                                     TransferEngine* transfers,
                                                     const KvSwapperOptions& options) {
  TS_CHECK(options.num_host_blocks >= 0 && options.num_staging >= 1) << "swapper options";
  std::unique_ptr<KvSwapper> s(new KvSwapper(device, transfers));
  s->block_bytes_ = device.layout.block_bytes();
  s->extent_bytes_ = (s->block_bytes_ + kDiskAlign - 1) / kDiskAlign * kDiskAlign;
  if (options.num_host_blocks > 0) {
    TS_ASSIGN_OR_RETURN(
        s->host_base_, host->carve(static_cast<uint64_t>(options.num_host_blocks) * s->block_bytes_,
                                   64, "the KV host tier (--kv-offloading-size)"));
  }
  s->host_slot_used_.assign(static_cast<size_t>(options.num_host_blocks), 0);
  for (int32_t i = options.num_host_blocks - 1; i >= 0; --i) s->free_host_.push_back(i);
  if (transfers->has_disk()) {
    if (transfers->extent_bytes() < s->extent_bytes_) {
      return invalid_argument("KV disk tier: extents of " +
                              format_bytes(transfers->extent_bytes()) +
                              " cannot hold a KV block of " + format_bytes(s->block_bytes_));
    }
    TS_ASSIGN_OR_RETURN(s->staging_base_,
                        host->carve(static_cast<uint64_t>(options.num_staging) * s->extent_bytes_,
                                    kDiskAlign, "KV disk staging buffers"));
    s->staging_ticket_.assign(static_cast<size_t>(options.num_staging), 0);
    s->staging_extent_.assign(static_cast<size_t>(options.num_staging), -1);
    const size_t extents = static_cast<size_t>(transfers->num_extents());
    s->extent_state_.assign(extents, ExtentState::kFree);
    s->extent_staging_.assign(extents, -1);
    s->extent_error_.assign(extents, Status::ok());
  }
  return s;
}

KvSwapper::~KvSwapper() { drain(); }

int32_t KvSwapper::num_free_swap_blocks() const {
  const int64_t disk = transfers_->has_disk() ? transfers_->num_free_extents() : 0;
  // Stored prefix blocks count as free, unless pinned: swap_out reclaims them.
  const int64_t reclaimable = static_cast<int64_t>(prefix_.size()) - pinned_prefix_;
  return static_cast<int32_t>(
      std::min<int64_t>(static_cast<int64_t>(free_host_.size()) + disk + reclaimable, INT32_MAX));
}

void KvSwapper::finish_staging(int32_t s) {
  const size_t i = static_cast<size_t>(s);
  TS_CHECK(staging_ticket_[i] != 0) << "staging buffer " << s << " has no write";
  Status status = transfers_->wait(staging_ticket_[i]);
  const size_t e = static_cast<size_t>(staging_extent_[i]);
  staging_ticket_[i] = 0;
  staging_extent_[i] = -1;
  extent_staging_[e] = -1;
  if (extent_state_[e] == ExtentState::kWriting) {
    extent_state_[e] = status.is_ok() ? ExtentState::kStored : ExtentState::kFailed;
    extent_error_[e] = std::move(status);
  } else {
    // Released while its write was in flight: nobody will read it; the extent is free now.
    transfers_->free_extent(static_cast<int64_t>(e));
  }
}

void KvSwapper::reap() {
  for (size_t i = 0; i < staging_ticket_.size(); ++i) {
    if (staging_ticket_[i] != 0 && transfers_->done(staging_ticket_[i])) {
      finish_staging(static_cast<int32_t>(i));
    }
  }
}

void KvSwapper::drain() {
  for (size_t i = 0; i < staging_ticket_.size(); ++i) {
    if (staging_ticket_[i] != 0) finish_staging(static_cast<int32_t>(i));
  }
}

int32_t KvSwapper::take_staging() {
  const int32_t n = static_cast<int32_t>(staging_ticket_.size());
  for (int32_t k = 0; k < n; ++k) {
    const int32_t s = (next_staging_ + k) % n;
    if (staging_ticket_[static_cast<size_t>(s)] == 0) {
      next_staging_ = (s + 1) % n;
      return s;
    }
  }
  const int32_t s = next_staging_;  // every buffer is busy: the oldest write is next in turn
  finish_staging(s);
  next_staging_ = (s + 1) % n;
  return s;
}

bool KvSwapper::take_slot(bool reclaim, SwapSlot* slot) {
  if (!free_host_.empty()) {
    const int32_t h = free_host_.back();
    free_host_.pop_back();
    host_slot_used_[static_cast<size_t>(h)] = 1;
    *slot = SwapSlot{false, h};
    return true;
  }
  if (transfers_->has_disk()) {
    Result<int64_t> extent = transfers_->allocate_extent();
    if (extent.is_ok()) {
      *slot = SwapSlot{true, static_cast<int32_t>(extent.value())};
      return true;
    }
  }
  if (!reclaim || !drop_lru_prefix()) return false;
  return take_slot(false, slot);
}

Status KvSwapper::write_to_disk(int32_t block, const SwapSlot& slot) {
  const int64_t e = slot.index;
  const int32_t s = take_staging();
  char* buf = staging(s);
  Status status = transfers_->wait(transfers_->copy(buf, device_.block_ptr(block), block_bytes_));
  stats_.bytes_device_to_host += block_bytes_;
  if (!status.is_ok()) return status;
  std::fill(buf + block_bytes_, buf + extent_bytes_, 0);  // the tail of the extent
  stats_.bytes_host_to_disk += extent_bytes_;
  extent_state_[static_cast<size_t>(e)] = ExtentState::kWriting;
  extent_staging_[static_cast<size_t>(e)] = s;
  staging_extent_[static_cast<size_t>(s)] = e;
  staging_ticket_[static_cast<size_t>(s)] = transfers_->disk_write(e, buf, extent_bytes_);
  return Status::ok();
}

Status KvSwapper::read_slot(const SwapSlot& slot, int32_t block,
                            std::vector<TransferTicket>* copies) {
  void* dst = device_.block_ptr(block);
  if (!slot.on_disk) {
    copies->push_back(transfers_->copy(dst, host_slot(slot.index), block_bytes_));
    stats_.bytes_host_to_device += block_bytes_;
    return Status::ok();
  }
  const size_t e = static_cast<size_t>(slot.index);
  // Readable only once its write has completed (DESIGN.md §6 invariant 5).
  if (extent_state_[e] == ExtentState::kWriting) finish_staging(extent_staging_[e]);
  if (extent_state_[e] != ExtentState::kStored) {
    return extent_error_[e].with_context("KV block stored in disk extent " + std::to_string(e));
  }
  const int32_t s = take_staging();
  Status status = transfers_->wait(transfers_->disk_read(slot.index, staging(s), extent_bytes_));
  stats_.bytes_disk_to_host += extent_bytes_;
  if (status.is_ok()) {
    status = transfers_->wait(transfers_->copy(dst, staging(s), block_bytes_));
    stats_.bytes_host_to_device += block_bytes_;
  }
  return status;
}

Result<std::vector<SwapSlot>> KvSwapper::swap_out(std::span<const int32_t> device_blocks) {
  reap();
  if (static_cast<int64_t>(device_blocks.size()) > num_free_swap_blocks()) {
    return internal_error("KV swap space full: " + std::to_string(device_blocks.size()) +
                          " blocks to swap out, " + std::to_string(num_free_swap_blocks()) +
                          " free");
  }
  std::vector<SwapSlot> slots(device_blocks.size());
  std::vector<TransferTicket> copies;
  Status status = Status::ok();
  size_t i = 0;
  // Host copies all in flight at once; a disk block goes through a staging buffer (see
  // write_to_disk) and is written in the background.
  for (; i < device_blocks.size() && status.is_ok(); ++i) {
    TS_CHECK(take_slot(true, &slots[i])) << "swap space counted free but not found";
    if (slots[i].on_disk) {
      ++used_disk_;
      status = write_to_disk(device_blocks[i], slots[i]);
      ++stats_.disk_blocks_out;
    } else {
      ++used_host_;
      copies.push_back(transfers_->copy(host_slot(slots[i].index),
                                        device_.block_ptr(device_blocks[i]), block_bytes_));
      stats_.bytes_device_to_host += block_bytes_;
    }
  }
  Status host = transfers_->wait_all(copies);
  if (status.is_ok()) status = std::move(host);
  if (!status.is_ok()) {
    release(std::span<SwapSlot>(slots).first(i));
    return status;
  }
  stats_.blocks_out += static_cast<int64_t>(device_blocks.size());
  return slots;
}

Status KvSwapper::swap_in(std::span<SwapSlot> slots, std::span<const int32_t> device_blocks) {
  TS_CHECK_EQ(slots.size(), device_blocks.size());
  reap();
  std::vector<TransferTicket> copies;
  Status status = Status::ok();
  for (size_t i = 0; i < slots.size() && status.is_ok(); ++i) {
    status = read_slot(slots[i], device_blocks[i], &copies);
    stats_.disk_blocks_in += slots[i].on_disk ? 1 : 0;
  }
  Status host = transfers_->wait_all(copies);
  if (status.is_ok()) status = std::move(host);
  release(slots);
  if (status.is_ok()) {
    stats_.blocks_in += static_cast<int64_t>(slots.size());
  } else {
    ++stats_.failures;
  }
  return status;
}

void KvSwapper::spill(int32_t block, const BlockHash& hash) {
  reap();
  auto it = prefix_.find(hash);
  if (it != prefix_.end()) {  // already stored: now the most recently used
    prefix_lru_.splice(prefix_lru_.begin(), prefix_lru_, it->second.lru);
    return;
  }
  SwapSlot slot;
  if (!take_slot(true, &slot)) return;
  Status status = Status::ok();
  if (slot.on_disk) {
    status = write_to_disk(block, slot);
  } else {
    status = transfers_->wait(
        transfers_->copy(host_slot(slot.index), device_.block_ptr(block), block_bytes_));
    stats_.bytes_device_to_host += block_bytes_;
  }
  if (!status.is_ok()) {
    free_slot(slot);
    return;
  }
  prefix_lru_.push_front(hash);
  prefix_.emplace(hash, PrefixEntry{slot, prefix_lru_.begin()});
  ++stats_.prefix_spilled;
}

bool KvSwapper::has_prefix_block(const BlockHash& hash) const {
  auto it = prefix_.find(hash);
  if (it == prefix_.end()) return false;
  const SwapSlot& slot = it->second.slot;
  // A disk entry is a hit once its write completed without error (a failed write is never
  // restored: DESIGN.md §6 invariant 5).
  return !slot.on_disk || extent_state_[static_cast<size_t>(slot.index)] == ExtentState::kStored ||
         (extent_state_[static_cast<size_t>(slot.index)] == ExtentState::kWriting &&
          transfers_->done_ok(staging_ticket_[static_cast<size_t>(
              extent_staging_[static_cast<size_t>(slot.index)])]));
}

Status KvSwapper::restore(std::span<const BlockHash> hashes,
                          std::span<const int32_t> device_blocks) {
  TS_CHECK_EQ(hashes.size(), device_blocks.size());
  reap();
  std::vector<TransferTicket> copies;
  Status status = Status::ok();
  for (size_t i = 0; i < hashes.size() && status.is_ok(); ++i) {
    auto it = prefix_.find(hashes[i]);
    TS_CHECK(it != prefix_.end()) << "restore of a prefix block that is not stored";
    prefix_lru_.splice(prefix_lru_.begin(), prefix_lru_, it->second.lru);
    // An unreadable disk entry stays (its extent kFailed, so no later hit sees it) until it
    // is reclaimed.
    status = read_slot(it->second.slot, device_blocks[i], &copies);
  }
  Status host = transfers_->wait_all(copies);
  if (status.is_ok()) status = std::move(host);
  if (status.is_ok()) {
    stats_.prefix_restored += static_cast<int64_t>(hashes.size());
  } else {
    ++stats_.failures;
  }
  return status;
}

void KvSwapper::pin_prefix(std::span<const BlockHash> hashes, int32_t delta) {
  for (const BlockHash& h : hashes) {
    auto it = prefix_.find(h);
    TS_CHECK(it != prefix_.end()) << "pin of a prefix block that is not stored";
    const bool was = it->second.pins > 0;
    it->second.pins += delta;
    TS_CHECK_GE(it->second.pins, 0) << "prefix block unpinned more than pinned";
    pinned_prefix_ += (it->second.pins > 0 ? 1 : 0) - (was ? 1 : 0);
  }
}

bool KvSwapper::drop_lru_prefix() {
  for (auto r = prefix_lru_.rbegin(); r != prefix_lru_.rend(); ++r) {
    auto it = prefix_.find(*r);
    if (it->second.pins > 0) continue;
    const SwapSlot slot = it->second.slot;
    prefix_lru_.erase(std::next(r).base());
    prefix_.erase(it);
    if (slot.on_disk) {
      const size_t e = static_cast<size_t>(slot.index);
      // Free at once rather than pinned: wait for its write to complete first.
      if (extent_state_[e] == ExtentState::kWriting) finish_staging(extent_staging_[e]);
    }
    free_slot(slot);
    return true;
  }
  return false;
}

void KvSwapper::free_slot(const SwapSlot& slot) {
  if (slot.index < 0) return;
  if (!slot.on_disk) {
    TS_CHECK(host_slot_used_[static_cast<size_t>(slot.index)]) << "host slot freed twice";
    host_slot_used_[static_cast<size_t>(slot.index)] = 0;
    free_host_.push_back(slot.index);
    return;
  }
  const size_t e = static_cast<size_t>(slot.index);
  const bool writing = extent_state_[e] == ExtentState::kWriting;
  extent_state_[e] = ExtentState::kFree;
  extent_error_[e] = Status::ok();
  // Pinned while its write is in flight: finish_staging() frees the extent when it completes.
  if (!writing) transfers_->free_extent(slot.index);
}

void KvSwapper::release(std::span<SwapSlot> slots) {
  for (SwapSlot& slot : slots) {
    if (slot.index >= 0) --(slot.on_disk ? used_disk_ : used_host_);
    free_slot(slot);
    slot = SwapSlot{};
  }
  reap();
}

}  // namespace tierserve

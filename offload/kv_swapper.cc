#include "offload/kv_swapper.h"

#include <algorithm>
#include <string>

#include "common/check.h"
#include "common/units.h"

namespace tierserve {
namespace {

constexpr uint64_t kDiskAlign = 4096;

// Keeps the first error of a sequence's moves.
void note(Status* outcome, Status s) {
  if (outcome->is_ok() && !s.is_ok()) *outcome = std::move(s);
}

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
    s->staging_reserved_.assign(static_cast<size_t>(options.num_staging), 0);
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
  int32_t oldest = -1;  // the first writing buffer in round-robin order: the oldest write
  for (int32_t k = 0; k < n; ++k) {
    const int32_t s = (next_staging_ + k) % n;
    if (staging_reserved_[static_cast<size_t>(s)]) continue;
    if (staging_ticket_[static_cast<size_t>(s)] == 0) {
      oldest = s;
      break;
    }
    if (oldest < 0) oldest = s;
  }
  TS_CHECK_GE(oldest, 0) << "every KV staging buffer is reserved";
  if (staging_ticket_[static_cast<size_t>(oldest)] != 0) finish_staging(oldest);
  next_staging_ = (oldest + 1) % n;
  staging_reserved_[static_cast<size_t>(oldest)] = 1;
  return oldest;
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

Result<std::vector<SwapSlot>> KvSwapper::place(std::span<const int32_t> device_blocks) {
  if (static_cast<int64_t>(device_blocks.size()) > num_free_swap_blocks()) {
    return internal_error("KV swap space full: " + std::to_string(device_blocks.size()) +
                          " blocks to swap out, " + std::to_string(num_free_swap_blocks()) +
                          " free");
  }
  std::vector<SwapSlot> slots(device_blocks.size());
  for (SwapSlot& slot : slots) {
    TS_CHECK(take_slot(true, &slot)) << "swap space counted free but not found";
    ++(slot.on_disk ? used_disk_ : used_host_);
  }
  return slots;
}

bool KvSwapper::place_spill(const EvictedBlock& e, SwapSlot* slot) {
  auto it = prefix_.find(e.hash);
  if (it != prefix_.end()) {  // already stored: now the most recently used
    prefix_lru_.splice(prefix_lru_.begin(), prefix_lru_, it->second.lru);
    return false;
  }
  if (!take_slot(true, slot)) return false;
  prefix_lru_.push_front(e.hash);
  // Pinned until its copy is done, so that no later move of this step reclaims its slot.
  prefix_.emplace(e.hash, PrefixEntry{*slot, prefix_lru_.begin(), 1});
  ++pinned_prefix_;
  return true;
}

void KvSwapper::copy_out(std::span<const BlockMove> moves) {
  std::vector<TransferTicket> host(moves.size(), 0);
  for (size_t i = 0; i < moves.size(); ++i) {
    if (moves[i].slot.on_disk) continue;
    host[i] = transfers_->copy(host_slot(moves[i].slot.index), device_.block_ptr(moves[i].block),
                               block_bytes_);
    stats_.bytes_device_to_host += block_bytes_;
  }
  // Disk blocks: a batch of staging buffers filled at once, then their writes submitted.
  struct Pending {
    size_t move;
    int32_t staging;
    TransferTicket copy;
  };
  std::vector<Pending> batch;
  auto write_batch = [&] {
    for (const Pending& p : batch) {
      const BlockMove& m = moves[p.move];
      Status s = transfers_->wait(p.copy);
      stats_.bytes_device_to_host += block_bytes_;
      staging_reserved_[static_cast<size_t>(p.staging)] = 0;
      if (!s.is_ok()) {
        note(m.status, std::move(s));
        continue;
      }
      char* buf = staging(p.staging);
      std::fill(buf + block_bytes_, buf + extent_bytes_, 0);  // the tail of the extent
      const size_t e = static_cast<size_t>(m.slot.index);
      extent_state_[e] = ExtentState::kWriting;
      extent_staging_[e] = p.staging;
      staging_extent_[static_cast<size_t>(p.staging)] = m.slot.index;
      staging_ticket_[static_cast<size_t>(p.staging)] =
          transfers_->disk_write(m.slot.index, buf, extent_bytes_);
      stats_.bytes_host_to_disk += extent_bytes_;
    }
    batch.clear();
  };
  for (size_t i = 0; i < moves.size(); ++i) {
    if (!moves[i].slot.on_disk) continue;
    if (batch.size() == staging_ticket_.size()) write_batch();
    const int32_t s = take_staging();
    batch.push_back(
        {i, s, transfers_->copy(staging(s), device_.block_ptr(moves[i].block), block_bytes_)});
  }
  write_batch();
  for (size_t i = 0; i < moves.size(); ++i) {
    if (host[i] != 0) note(moves[i].status, transfers_->wait(host[i]));
  }
}

void KvSwapper::copy_in(std::span<const BlockMove> moves) {
  std::vector<TransferTicket> host(moves.size(), 0);
  for (size_t i = 0; i < moves.size(); ++i) {
    if (moves[i].slot.on_disk) continue;
    host[i] = transfers_->copy(device_.block_ptr(moves[i].block), host_slot(moves[i].slot.index),
                               block_bytes_);
    stats_.bytes_host_to_device += block_bytes_;
  }
  // Disk blocks: a batch of reads into staging buffers submitted together, then copied.
  struct Pending {
    size_t move;
    int32_t staging;
    TransferTicket read;
  };
  std::vector<Pending> batch;
  auto copy_batch = [&] {
    std::vector<TransferTicket> copies(batch.size(), 0);
    for (size_t j = 0; j < batch.size(); ++j) {
      const BlockMove& m = moves[batch[j].move];
      Status s = transfers_->wait(batch[j].read);
      stats_.bytes_disk_to_host += extent_bytes_;
      if (!s.is_ok()) {
        note(m.status, std::move(s));
        continue;
      }
      copies[j] =
          transfers_->copy(device_.block_ptr(m.block), staging(batch[j].staging), block_bytes_);
      stats_.bytes_host_to_device += block_bytes_;
    }
    for (size_t j = 0; j < batch.size(); ++j) {
      if (copies[j] != 0) note(moves[batch[j].move].status, transfers_->wait(copies[j]));
      staging_reserved_[static_cast<size_t>(batch[j].staging)] = 0;
    }
    batch.clear();
  };
  for (size_t i = 0; i < moves.size(); ++i) {
    const BlockMove& m = moves[i];
    if (!m.slot.on_disk) continue;
    const size_t e = static_cast<size_t>(m.slot.index);
    // Readable only once its write has completed (DESIGN.md §6 invariant 5).
    if (extent_state_[e] == ExtentState::kWriting) finish_staging(extent_staging_[e]);
    TS_CHECK(extent_state_[e] != ExtentState::kFree) << "read of free disk extent " << e;
    if (extent_state_[e] != ExtentState::kStored) {
      note(m.status,
           extent_error_[e].with_context("KV block stored in disk extent " + std::to_string(e)));
      continue;
    }
    if (batch.size() == staging_ticket_.size()) copy_batch();
    const int32_t s = take_staging();
    batch.push_back({i, s, transfers_->disk_read(m.slot.index, staging(s), extent_bytes_)});
  }
  copy_batch();
  for (size_t i = 0; i < moves.size(); ++i) {
    if (host[i] != 0) note(moves[i].status, transfers_->wait(host[i]));
  }
}

KvStepResult KvSwapper::move(const KvStepMoves& m) {
  reap();
  for (const KvStepMoves::Restore& r : m.restores) pin_prefix(r.hashes, +1);
  KvStepResult result;

  // Out-moves: slots for swap-outs first, then for spills; then the copies.
  const size_t num_outs = m.swap_outs.size();
  std::vector<Status> out_status(num_outs + m.spills.size(), Status::ok());
  std::vector<BlockMove> out;
  for (size_t i = 0; i < num_outs; ++i) {
    result.swap_outs.push_back(place(m.swap_outs[i]));
    if (!result.swap_outs[i].is_ok()) continue;
    const std::vector<SwapSlot>& slots = result.swap_outs[i].value();
    for (size_t j = 0; j < slots.size(); ++j) {
      out.push_back({m.swap_outs[i][j], slots[j], &out_status[i]});
    }
  }
  std::vector<const BlockHash*> spilled(m.spills.size(), nullptr);
  for (size_t k = 0; k < m.spills.size(); ++k) {
    SwapSlot slot;
    if (!place_spill(m.spills[k], &slot)) continue;
    spilled[k] = &m.spills[k].hash;
    out.push_back({m.spills[k].block, slot, &out_status[num_outs + k]});
  }
  copy_out(out);
  for (size_t i = 0; i < num_outs; ++i) {
    if (!result.swap_outs[i].is_ok()) continue;
    std::vector<SwapSlot>& slots = result.swap_outs[i].value();
    if (!out_status[i].is_ok()) {
      release(slots);
      result.swap_outs[i] = std::move(out_status[i]);
      continue;
    }
    stats_.blocks_out += static_cast<int64_t>(slots.size());
    for (const SwapSlot& slot : slots) stats_.disk_blocks_out += slot.on_disk ? 1 : 0;
  }
  for (size_t k = 0; k < m.spills.size(); ++k) {
    if (spilled[k] == nullptr) continue;
    pin_prefix(std::span<const BlockHash>(spilled[k], 1), -1);
    if (out_status[num_outs + k].is_ok()) {
      ++stats_.prefix_spilled;
      continue;
    }
    // Best effort: a failed copy stores nothing.
    auto it = prefix_.find(*spilled[k]);
    const SwapSlot slot = it->second.slot;
    prefix_lru_.erase(it->second.lru);
    prefix_.erase(it);
    free_slot(slot);
  }

  // In-moves: swap-ins, then restores.
  const size_t num_ins = m.swap_ins.size();
  std::vector<Status> in_status(num_ins + m.restores.size(), Status::ok());
  std::vector<BlockMove> in;
  for (size_t i = 0; i < num_ins; ++i) {
    const KvStepMoves::SwapIn& s = m.swap_ins[i];
    TS_CHECK_EQ(s.slots.size(), s.device_blocks.size());
    for (size_t j = 0; j < s.slots.size(); ++j) {
      in.push_back({s.device_blocks[j], s.slots[j], &in_status[i]});
      stats_.disk_blocks_in += s.slots[j].on_disk ? 1 : 0;
    }
  }
  for (size_t k = 0; k < m.restores.size(); ++k) {
    const KvStepMoves::Restore& r = m.restores[k];
    TS_CHECK_EQ(r.hashes.size(), r.device_blocks.size());
    for (size_t j = 0; j < r.hashes.size(); ++j) {
      auto it = prefix_.find(r.hashes[j]);
      TS_CHECK(it != prefix_.end()) << "restore of a prefix block that is not stored";
      prefix_lru_.splice(prefix_lru_.begin(), prefix_lru_, it->second.lru);
      // An unreadable disk entry stays (its extent kFailed, so no later hit sees it) until it
      // is reclaimed.
      in.push_back({r.device_blocks[j], it->second.slot, &in_status[num_ins + k]});
    }
  }
  copy_in(in);
  for (size_t i = 0; i < num_ins; ++i) {
    release(m.swap_ins[i].slots);
    if (in_status[i].is_ok()) {
      stats_.blocks_in += static_cast<int64_t>(m.swap_ins[i].slots.size());
    } else {
      ++stats_.failures;
    }
    result.swap_ins.push_back(std::move(in_status[i]));
  }
  for (size_t k = 0; k < m.restores.size(); ++k) {
    pin_prefix(m.restores[k].hashes, -1);
    if (in_status[num_ins + k].is_ok()) {
      stats_.prefix_restored += static_cast<int64_t>(m.restores[k].hashes.size());
    } else {
      ++stats_.failures;
    }
    result.restores.push_back(std::move(in_status[num_ins + k]));
  }
  return result;
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

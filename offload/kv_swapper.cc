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
  return static_cast<int32_t>(
      std::min<int64_t>(static_cast<int64_t>(free_host_.size()) + disk, INT32_MAX));
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

Result<std::vector<SwapSlot>> KvSwapper::swap_out(std::span<const int32_t> device_blocks) {
  reap();
  if (static_cast<int64_t>(device_blocks.size()) > num_free_swap_blocks()) {
    return internal_error("KV swap space full: " + std::to_string(device_blocks.size()) +
                          " blocks to swap out, " + std::to_string(num_free_swap_blocks()) +
                          " free");
  }
  std::vector<SwapSlot> slots(device_blocks.size());
  std::vector<TransferTicket> copies;
  // Host slots first, all copies in flight at once.
  size_t i = 0;
  for (; i < device_blocks.size() && !free_host_.empty(); ++i) {
    const int32_t h = free_host_.back();
    free_host_.pop_back();
    host_slot_used_[static_cast<size_t>(h)] = 1;
    ++used_host_;
    slots[i] = SwapSlot{false, h};
    copies.push_back(
        transfers_->copy(host_slot(h), device_.block_ptr(device_blocks[i]), block_bytes_));
  }
  Status status = transfers_->wait_all(copies);
  // The rest through staging buffers to disk: the device block is read into a staging buffer
  // (waited for, so the block is free to reuse), then written out asynchronously.
  for (; i < device_blocks.size() && status.is_ok(); ++i) {
    Result<int64_t> extent = transfers_->allocate_extent();
    TS_CHECK(extent.is_ok()) << extent.status().to_string();  // counted free above
    const int64_t e = extent.value();
    const int32_t s = take_staging();
    char* buf = staging(s);
    status =
        transfers_->wait(transfers_->copy(buf, device_.block_ptr(device_blocks[i]), block_bytes_));
    if (!status.is_ok()) {
      transfers_->free_extent(e);
      break;
    }
    std::fill(buf + block_bytes_, buf + extent_bytes_, 0);  // the tail of the extent
    slots[i] = SwapSlot{true, static_cast<int32_t>(e)};
    ++used_disk_;
    extent_state_[static_cast<size_t>(e)] = ExtentState::kWriting;
    extent_staging_[static_cast<size_t>(e)] = s;
    staging_extent_[static_cast<size_t>(s)] = e;
    staging_ticket_[static_cast<size_t>(s)] = transfers_->disk_write(e, buf, extent_bytes_);
    ++stats_.disk_blocks_out;
  }
  if (!status.is_ok()) {
    for (size_t j = 0; j < i; ++j) free_slot(slots[j]);
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
  for (size_t i = 0; i < slots.size(); ++i) {
    const SwapSlot& slot = slots[i];
    void* dst = device_.block_ptr(device_blocks[i]);
    if (!slot.on_disk) {
      copies.push_back(transfers_->copy(dst, host_slot(slot.index), block_bytes_));
      continue;
    }
    if (!status.is_ok()) continue;
    const size_t e = static_cast<size_t>(slot.index);
    // Readable only once its write has completed (DESIGN.md §6 invariant 5).
    if (extent_state_[e] == ExtentState::kWriting) finish_staging(extent_staging_[e]);
    if (extent_state_[e] != ExtentState::kStored) {
      status =
          extent_error_[e].with_context("KV block swapped to disk extent " + std::to_string(e));
      continue;
    }
    const int32_t s = take_staging();
    status = transfers_->wait(transfers_->disk_read(slot.index, staging(s), extent_bytes_));
    if (status.is_ok()) status = transfers_->wait(transfers_->copy(dst, staging(s), block_bytes_));
    ++stats_.disk_blocks_in;
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

void KvSwapper::free_slot(const SwapSlot& slot) {
  if (slot.index < 0) return;
  if (!slot.on_disk) {
    TS_CHECK(host_slot_used_[static_cast<size_t>(slot.index)]) << "host slot freed twice";
    host_slot_used_[static_cast<size_t>(slot.index)] = 0;
    free_host_.push_back(slot.index);
    --used_host_;
    return;
  }
  const size_t e = static_cast<size_t>(slot.index);
  TS_CHECK(extent_state_[e] != ExtentState::kFree) << "disk slot freed twice";
  --used_disk_;
  const bool writing = extent_state_[e] == ExtentState::kWriting;
  extent_state_[e] = ExtentState::kFree;
  extent_error_[e] = Status::ok();
  // Pinned while its write is in flight: finish_staging() frees the extent when it completes.
  if (!writing) transfers_->free_extent(slot.index);
}

void KvSwapper::release(std::span<SwapSlot> slots) {
  for (SwapSlot& slot : slots) {
    free_slot(slot);
    slot = SwapSlot{};
  }
  reap();
}

}  // namespace tierserve

#include "offload/weight_streamer.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>

#include "common/check.h"
#include "common/logging.h"
#include "common/units.h"
#include "offload/crc32c.h"

namespace tierserve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxRegisteredBuffer = 1ull << 30;  // io_uring's limit per fixed buffer

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Per tensor of `unit`: its offset from `base` when it lies in [base, base + bytes), else
// kKeepView (absent, or memory that outlives the streamer).
std::vector<int64_t> offsets_in(const WeightUnit& unit, const char* base, uint64_t bytes) {
  std::vector<int64_t> out;
  for (const TensorView& t : unit.tensors) {
    const char* p = static_cast<const char*>(t.data);
    const bool inside = p != nullptr && p >= base && p < base + bytes;
    out.push_back(inside ? static_cast<int64_t>(p - base) : kKeepView);
  }
  return out;
}

}  // namespace

Status WeightStreamerOptions::validate() const {
  if (prefetch_depth < 1 || prefetch_depth > 64) {
    return invalid_argument("--offload-prefetch-depth must be in [1, 64], got " +
                            std::to_string(prefetch_depth));
  }
  if (extent_bytes == 0 || extent_bytes % kPage != 0 || extent_bytes > (1ull << 30)) {
    return invalid_argument(
        "weight extent bytes must be a positive multiple of 4096 up to 1 GiB, "
        "got " +
        std::to_string(extent_bytes));
  }
  if (copy_threads < 1 || copy_threads > 16) {
    return invalid_argument("weight copy threads must be in [1, 16], got " +
                            std::to_string(copy_threads));
  }
  return Status::ok();
}

WeightStreamer::WeightStreamer(Backend* backend, void* arena, uint64_t arena_bytes,
                               int32_t prefetch_depth)
    : backend_(backend),
      arena_(arena),
      arena_bytes_(arena_bytes),
      prefetch_depth_(prefetch_depth) {}

Result<std::unique_ptr<WeightStreamer>> WeightStreamer::create(
    Backend* backend, std::vector<StreamedUnit> units, void* arena, uint64_t arena_bytes,
    const WeightStreamerOptions& options) {
  // Owns the arena from here on, whatever happens.
  std::unique_ptr<WeightStreamer> s(
      new WeightStreamer(backend, arena, arena_bytes, options.prefetch_depth));
  TS_RETURN_IF_ERROR(options.validate());
  s->copy_threads_ = options.copy_threads;
  s->extent_bytes_ = options.extent_bytes;
  TS_RETURN_IF_ERROR(s->fill_tiers(units, options));
  TS_RETURN_IF_ERROR(s->write_disk_copies(units));
  TS_RETURN_IF_ERROR(s->checksum_in_place_reads());
  s->top_up();
  return s;
}

Status WeightStreamer::fill_tiers(std::vector<StreamedUnit>& in,
                                  const WeightStreamerOptions& options) {
  units_.resize(in.size());
  uint64_t host_total = 0, copy_total = 0;
  bool any_disk = false;
  for (size_t u = 0; u < in.size(); ++u) {
    StreamedUnit& su = in[u];
    Unit& unit = units_[u];
    unit.tier = su.tier;
    unit.view = su.unit;
    if (su.tier == WeightTier::kDevice) continue;
    streamed_.push_back(static_cast<int32_t>(u));
    const bool in_place = su.tier == WeightTier::kDisk && !su.file_reads.empty();
    any_disk |= su.tier == WeightTier::kDisk;
    if (in_place) {
      TS_CHECK_EQ(su.slot_offsets.size(), su.unit.tensors.size()) << su.unit.name;
      unit.slot_offsets = su.slot_offsets;
      unit.file_reads = su.file_reads;
      for (const FileRead& r : su.file_reads) {
        TS_CHECK(r.file >= 0 && static_cast<size_t>(r.file) < options.files.size())
            << su.unit.name << ": file " << r.file;
        TS_CHECK(r.offset % kPage == 0 && r.bytes % kPage == 0 && r.bytes > 0 &&
                 r.slot_offset % kPage == 0)
            << su.unit.name << ": unaligned read";
        unit.bytes += r.bytes;
        slot_bytes_ = std::max(slot_bytes_, r.slot_offset + r.bytes);
      }
      continue;
    }
    TS_CHECK(su.write_image != nullptr && su.image_bytes > 0) << su.unit.name << ": no image";
    unit.bytes = align_up(su.image_bytes, kPage);
    slot_bytes_ = std::max(slot_bytes_, unit.bytes);
    if (su.tier == WeightTier::kHost) {
      host_total += unit.bytes;
    } else {
      copy_total += disk_copy_bytes(su.image_bytes, extent_bytes_);
    }
  }

  // The host tier: each image written once, in the device layout.
  if (host_total > 0) {
    TS_ASSIGN_OR_RETURN(host_pool_, HostPool::create(host_total, backend_, options.topology));
    for (size_t u = 0; u < in.size(); ++u) {
      if (in[u].tier != WeightTier::kHost) continue;
      Unit& unit = units_[u];
      TS_ASSIGN_OR_RETURN(char* dst, host_pool_->carve(unit.bytes, kPage, "streamed weights"));
      std::memset(dst + in[u].image_bytes, 0, unit.bytes - in[u].image_bytes);
      TS_ASSIGN_OR_RETURN(unit.view, in[u].write_image(dst));
      if (unit.view.name.empty()) unit.view.name = in[u].unit.name;
      unit.slot_offsets = offsets_in(unit.view, dst, in[u].image_bytes);
      unit.host_image = dst;
    }
  }

  // The staging ring, in the device tier.
  const size_t num_slots =
      std::min(static_cast<size_t>(prefetch_depth_) + 1, static_cast<size_t>(streamed_.size()));
  slot_bytes_ = align_up(slot_bytes_, kPage);
  if (num_slots > 0) {
    ring_bytes_ = num_slots * slot_bytes_;
    auto ring = backend_->allocate(ring_bytes_);
    if (!ring.is_ok()) {
      ring_bytes_ = 0;
      return ring.status().with_context("weight staging ring of " + std::to_string(num_slots) +
                                        " x " + format_bytes(slot_bytes_));
    }
    ring_ = ring.value();
    for (size_t i = 0; i < num_slots; ++i) {
      slots_.push_back(static_cast<char*>(ring_) + i * slot_bytes_);
      slot_fences_.push_back(0);
      free_slots_.push_back(static_cast<int32_t>(i));
    }
  }

  // The disk tier: the checkpoint's files and one-time copies, read straight into the slots.
  std::unique_ptr<DiskStore> store;
  if (any_disk) {
    if (options.offload_dir.empty()) {
      return invalid_argument("disk-streamed weights need --offload-dir");
    }
    if (backend_->device() != DeviceKind::kCpu && !slots_.empty()) {
      // io_uring reads into host memory: a pinned bounce buffer per slot.
      TS_ASSIGN_OR_RETURN(
          bounce_pool_, HostPool::create(slots_.size() * slot_bytes_, backend_, options.topology));
      for (size_t i = 0; i < slots_.size(); ++i) {
        TS_ASSIGN_OR_RETURN(char* b,
                            bounce_pool_->carve(slot_bytes_, kPage, "disk bounce buffers"));
        bounce_slots_.push_back(b);
      }
    }
    DiskStoreOptions o;
    o.dir = options.offload_dir;
    o.extent_bytes = extent_bytes_;
    o.capacity_bytes = std::max(copy_total, extent_bytes_);
    o.queue_depth = options.queue_depth;
    TS_ASSIGN_OR_RETURN(store, DiskStore::create(o));
    for (const std::filesystem::path& f : options.files) {
      TS_ASSIGN_OR_RETURN(int32_t id, store->open_file(f));
      file_ids_.push_back(id);
      std::error_code ec;
      file_sizes_.push_back(std::filesystem::file_size(f, ec));
      if (ec) return io_error(f.string() + ": " + ec.message());
    }
    if (slot_bytes_ <= kMaxRegisteredBuffer) {
      std::vector<iovec> bufs;
      for (size_t i = 0; i < slots_.size(); ++i) {
        bufs.push_back({read_dst(static_cast<int32_t>(i)), slot_bytes_});
      }
      Status reg = store->register_buffers(bufs);
      if (!reg.is_ok()) {
        TS_LOG(Info) << "weight staging ring not registered with io_uring (" << reg.to_string()
                     << "); reads use plain opcodes";
      }
    }
    if (options.fault_hook_for_testing)
      store->set_fault_hook_for_testing(options.fault_hook_for_testing);
    disk_direct_io_ = store->direct_io();
  }
  TransferEngineOptions to;
  to.copy_threads = copy_threads_;
  TS_ASSIGN_OR_RETURN(engine_, TransferEngine::create(backend_, std::move(store), to));
  return Status::ok();
}

Status WeightStreamer::write_disk_copies(std::vector<StreamedUnit>& in) {
  uint64_t max_image = 0;
  for (size_t u = 0; u < in.size(); ++u) {
    if (in[u].tier == WeightTier::kDisk && in[u].file_reads.empty()) {
      max_image = std::max(max_image, units_[u].bytes);
    }
  }
  if (max_image == 0) return Status::ok();
  std::unique_ptr<char, FreeDeleter> buf(static_cast<char*>(std::aligned_alloc(kPage, max_image)));
  if (buf == nullptr) {
    return resource_exhausted("no host memory for a " + format_bytes(max_image) +
                              " buffer to copy weights to --offload-dir");
  }
  for (size_t u = 0; u < in.size(); ++u) {
    if (in[u].tier != WeightTier::kDisk || !in[u].file_reads.empty()) continue;
    Unit& unit = units_[u];
    std::memset(buf.get(), 0, unit.bytes);
    TS_ASSIGN_OR_RETURN(unit.view, in[u].write_image(buf.get()));
    if (unit.view.name.empty()) unit.view.name = in[u].unit.name;
    unit.slot_offsets = offsets_in(unit.view, buf.get(), in[u].image_bytes);
    std::vector<TransferTicket> tickets;
    for (uint64_t off = 0; off < unit.bytes; off += extent_bytes_) {
      auto extent = engine_->allocate_extent();
      if (!extent.is_ok()) {
        (void)engine_->wait_all(tickets);
        return extent.status().with_context("copying " + unit.view.name + " to --offload-dir");
      }
      unit.extents.push_back(extent.value());
      tickets.push_back(engine_->disk_write(extent.value(), buf.get() + off,
                                            std::min(extent_bytes_, unit.bytes - off)));
    }
    Status s = engine_->wait_all(tickets);
    if (!s.is_ok()) return s.with_context("copying " + unit.view.name + " to --offload-dir");
  }
  return Status::ok();
}

Status WeightStreamer::checksum_in_place_reads() {
  // Every staging slot at once: a unit's reads in flight per slot, checksummed as each lands.
  std::deque<InFlight> reading;
  auto finish_oldest = [&]() -> Status {
    InFlight f = std::move(reading.front());
    reading.pop_front();
    Unit& unit = units_[static_cast<size_t>(f.unit)];
    Status s = engine_->wait_all(f.tickets);
    free_slots_.push_back(unit.slot);
    const char* slot = read_dst(unit.slot);  // host memory: the slot, or its bounce buffer
    unit.slot = -1;
    if (!s.is_ok()) return s.with_context("checksumming " + unit.view.name + " in place");
    unit.file_crcs.clear();
    for (const FileRead& r : unit.file_reads) {
      // Of the file's bytes in the range, as DiskStore::submit_file_read checks it.
      const uint64_t size = file_sizes_[static_cast<size_t>(r.file)];
      const uint64_t bytes = std::min(r.bytes, size > r.offset ? size - r.offset : 0);
      unit.file_crcs.push_back(crc32c(slot + r.slot_offset, bytes));
    }
    return Status::ok();
  };
  Status status = Status::ok();
  for (int32_t u : streamed_) {
    Unit& unit = units_[static_cast<size_t>(u)];
    if (unit.file_reads.empty()) continue;
    if (free_slots_.empty()) {
      status = finish_oldest();
      if (!status.is_ok()) break;
    }
    unit.slot = free_slots_.back();
    free_slots_.pop_back();
    reading.push_back(InFlight{u, start_transfer(unit, /*to_device=*/false)});
  }
  while (!reading.empty()) {
    Status s = finish_oldest();
    if (status.is_ok()) status = std::move(s);
  }
  return status;
}

WeightStreamer::~WeightStreamer() {
  if (engine_ != nullptr) {
    drain();
    engine_.reset();
  }
  if (ring_ != nullptr) backend_->deallocate(ring_);
  host_pool_.reset();
  if (arena_ != nullptr) backend_->deallocate(arena_);
}

void WeightStreamer::issue(int32_t u) {
  Unit& unit = units_[static_cast<size_t>(u)];
  TS_CHECK(!free_slots_.empty()) << "no free staging slot for " << unit.view.name;
  unit.slot = free_slots_.back();
  free_slots_.pop_back();
  unit.queued = true;
  queue_.push_back(InFlight{u, start_transfer(unit)});
}

std::vector<TransferTicket> WeightStreamer::start_transfer(const Unit& unit, bool to_device) {
  char* dst = slot_data(unit.slot);
  const uint64_t fence = slot_fences_[static_cast<size_t>(unit.slot)];
  // Disk reads: into the slot, or into its bounce buffer and from there on to the slot.
  char* read = read_dst(unit.slot);
  auto then = [&](uint64_t offset) {
    ForwardCopy f;
    if (read != dst && to_device) f = {dst + offset, fence};
    return f;
  };
  std::vector<TransferTicket> tickets;
  if (unit.tier == WeightTier::kHost) {
    const uint64_t piece = align_up((unit.bytes + static_cast<uint64_t>(copy_threads_) - 1) /
                                        static_cast<uint64_t>(copy_threads_),
                                    64);
    for (uint64_t off = 0; off < unit.bytes; off += piece) {
      tickets.push_back(engine_->copy(dst + off, unit.host_image + off,
                                      std::min(piece, unit.bytes - off), fence));
    }
  } else if (!unit.file_reads.empty()) {
    for (size_t i = 0; i < unit.file_reads.size(); ++i) {
      const FileRead& r = unit.file_reads[i];
      // Checked against the CRC taken at start-up, once there is one.
      std::optional<uint32_t> crc;
      if (!unit.file_crcs.empty()) crc = unit.file_crcs[i];
      tickets.push_back(engine_->file_read(file_ids_[static_cast<size_t>(r.file)], r.offset,
                                           read + r.slot_offset, r.bytes, crc,
                                           then(r.slot_offset)));
    }
  } else {
    for (size_t i = 0; i < unit.extents.size(); ++i) {
      const uint64_t off = i * extent_bytes_;
      tickets.push_back(engine_->disk_read(unit.extents[i], read + off,
                                           std::min(extent_bytes_, unit.bytes - off), then(off)));
    }
  }
  return tickets;
}

void WeightStreamer::top_up() {
  while (!streamed_.empty() && !free_slots_.empty() &&
         queue_.size() < static_cast<size_t>(prefetch_depth_)) {
    const int32_t u = streamed_[next_];
    const Unit& unit = units_[static_cast<size_t>(u)];
    if (unit.held || unit.queued) break;  // the whole cycle is already in the ring
    issue(u);
    next_ = (next_ + 1) % streamed_.size();
  }
}

void WeightStreamer::drain() {
  while (!queue_.empty()) {
    InFlight f = std::move(queue_.front());
    queue_.pop_front();
    (void)engine_->wait_all(f.tickets);  // discarded: its bytes are never used
    Unit& unit = units_[static_cast<size_t>(f.unit)];
    unit.queued = false;
    free_slots_.push_back(unit.slot);
    unit.slot = -1;
  }
}

Result<const WeightUnit*> WeightStreamer::acquire(int32_t u) {
  TS_CHECK(u >= 0 && u < num_units()) << "unit " << u;
  Unit& unit = units_[static_cast<size_t>(u)];
  TS_CHECK(!unit.held) << "unit " << u << " acquired twice";
  ++stats_.acquires;
  if (unit.tier == WeightTier::kDevice) {
    unit.held = true;
    return &unit.view;
  }
  ++stats_.streamed_acquires;
  if (queue_.empty() || queue_.front().unit != u) {
    // Out of pipeline order: start again at u.
    ++stats_.restarts;
    drain();
    next_ =
        static_cast<size_t>(std::find(streamed_.begin(), streamed_.end(), u) - streamed_.begin());
    TS_CHECK(!free_slots_.empty())
        << "every staging slot is held; cannot stream " << unit.view.name;
    top_up();
    TS_CHECK(!queue_.empty() && queue_.front().unit == u) << unit.view.name;
  }
  InFlight f = std::move(queue_.front());
  queue_.pop_front();
  unit.queued = false;
  bool ready = true;
  for (TransferTicket t : f.tickets) ready = ready && engine_->done(t);
  const Clock::time_point t0 = Clock::now();
  Status s = engine_->wait_all(f.tickets);
  // A failed transfer (an I/O error, a short read, a checksum mismatch) is read again into the
  // same slot, kReadAttempts times in all, before the step is failed.
  for (int32_t attempt = 2; !s.is_ok() && attempt <= kReadAttempts; ++attempt) {
    TS_LOG(Warning) << "streaming the weights of " << unit.view.name << " from "
                    << weight_tier_name(unit.tier) << " failed (" << s.message()
                    << "); reading them again (attempt " << attempt << " of " << kReadAttempts
                    << ")";
    ++stats_.retries;
    ready = false;
    s = engine_->wait_all(start_transfer(unit));
  }
  if (!ready) {
    ++stats_.stalls;
    stats_.stall_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (!s.is_ok()) {
    ++stats_.failures;
    free_slots_.push_back(unit.slot);
    unit.slot = -1;
    return s.with_context(std::string("streaming the weights of ") + unit.view.name + " from " +
                          weight_tier_name(unit.tier) + " (" + std::to_string(kReadAttempts) +
                          " attempts)");
  }
  (unit.tier == WeightTier::kHost ? stats_.host_bytes : stats_.disk_bytes) += unit.bytes;
  char* slot = slot_data(unit.slot);
  for (size_t i = 0; i < unit.view.tensors.size(); ++i) {
    if (unit.slot_offsets[i] == kKeepView) continue;
    unit.view.tensors[i].data = slot + unit.slot_offsets[i];
    unit.view.tensors[i].device = backend_->device();
  }
  unit.held = true;
  top_up();
  return &unit.view;
}

void WeightStreamer::release(int32_t u) {
  TS_CHECK(u >= 0 && u < num_units()) << "unit " << u;
  Unit& unit = units_[static_cast<size_t>(u)];
  TS_CHECK(unit.held) << "unit " << u << " released unacquired";
  unit.held = false;
  if (unit.tier == WeightTier::kDevice) return;
  slot_fences_[static_cast<size_t>(unit.slot)] = backend_->record_fence();
  free_slots_.push_back(unit.slot);
  unit.slot = -1;
  top_up();
}

}  // namespace tierserve

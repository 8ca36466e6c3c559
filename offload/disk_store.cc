#include "offload/disk_store.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/check.h"
#include "common/logging.h"
#include "common/units.h"
#include "offload/crc32c.h"

namespace tierserve {
namespace {

constexpr uint64_t kAlignment = 4096;  // O_DIRECT alignment of offsets, lengths, buffers
constexpr uint64_t kMaxIoBytes = uint64_t{1} << 30;  // one operation; io_uring lengths are 32-bit
constexpr uint32_t kFileSlots = 1024;  // ring file table: the extents file + 1023 files
constexpr const char* kExtentFileName = "extents";

std::string errno_text(int err) { return std::string(std::strerror(err)); }

// The status of an operation that failed with `err`: a full device is a full tier.
Status errno_status(int err, const std::string& context) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    return resource_exhausted(context + ": " + errno_text(err));
  }
  return io_error(context + ": " + errno_text(err));
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

void check_io_args(const void* buf, uint64_t bytes, uint64_t max_bytes) {
  TS_CHECK(bytes > 0 && bytes % kAlignment == 0 && bytes <= max_bytes)
      << "I/O length " << bytes << " must be a positive multiple of " << kAlignment
      << " and <= " << max_bytes;
  TS_CHECK(reinterpret_cast<uintptr_t>(buf) % kAlignment == 0)
      << "I/O buffer " << buf << " is not " << kAlignment << "-byte aligned";
}

// Opens `path` with `flags`, adding O_DIRECT when `direct`; when the file system refuses O_DIRECT
// (EINVAL), opens it buffered and clears `direct`. Returns the fd, or -1 with errno set.
int open_maybe_direct(const std::filesystem::path& path, int flags, bool& direct) {
  if (direct) {
    const int fd = ::open(path.c_str(), flags | O_DIRECT, 0600);
    if (fd >= 0 || errno != EINVAL) return fd;
    TS_LOG(Warning) << "the file system of " << path.string()
                    << " refuses O_DIRECT; using buffered I/O for it (reads may be served by the "
                       "page cache, and the page cache holds a second copy)";
    direct = false;
  }
  return ::open(path.c_str(), flags, 0600);
}

// Private directories are named "tierserve-offload-<pid>-XXXXXX". One whose process no longer
// exists was left by a process that was killed before its destructors ran (SIGKILL, an abort):
// its preallocated space is reclaimed. Directories of live processes are left alone.
constexpr const char* kPrivatePrefix = "tierserve-offload-";

void remove_stale_private_dirs(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kPrivatePrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::strlen(kPrivatePrefix));
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str(), &end, 10);
    if (end == rest.c_str() || *end != '-' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code rm;
    const uintmax_t removed = std::filesystem::remove_all(entry.path(), rm);
    if (!rm && removed > 0) {
      TS_LOG(Warning) << "offload dir " << dir.string() << ": removed " << name
                      << ", left by process " << pid << " that no longer runs";
    }
  }
}

}  // namespace

Status DiskStoreOptions::validate() const {
  if (dir.empty()) return invalid_argument("DiskStoreOptions.dir (--offload-dir) is empty");
  if (extent_bytes == 0 || extent_bytes % kAlignment != 0 || extent_bytes > kMaxIoBytes) {
    return invalid_argument("DiskStoreOptions.extent_bytes must be a positive multiple of 4096 " +
                            std::string("and at most 1 GiB, got ") + std::to_string(extent_bytes));
  }
  if (capacity_bytes < extent_bytes) {
    return invalid_argument("DiskStoreOptions.capacity_bytes must hold at least one extent (" +
                            std::to_string(extent_bytes) + " bytes), got " +
                            std::to_string(capacity_bytes));
  }
  if (queue_depth < 1 || queue_depth > 4096) {
    return invalid_argument("DiskStoreOptions.queue_depth must be in 1..4096, got " +
                            std::to_string(queue_depth));
  }
  return Status::ok();
}

DiskStore::PrivateDir::~PrivateDir() {
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec)
    TS_LOG(Warning) << "cannot remove offload directory " << path.string() << ": " << ec.message();
}

DiskStore::DiskStore(const DiskStoreOptions& options)
    : options_(options), direct_io_(options.direct_io) {}

Result<std::unique_ptr<DiskStore>> DiskStore::create(const DiskStoreOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  std::unique_ptr<DiskStore> store(new DiskStore(options));
  // On error the store's destructor closes what init opened and removes the private directory.
  TS_RETURN_IF_ERROR(store->init());
  return store;
}

Status DiskStore::init() {
  const std::string dir = options_.dir.string();
  const std::string what = "offload dir " + dir;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return not_found(what + " does not exist");
    return io_error(what + ": " + errno_text(err));
  }
  if (!S_ISDIR(st.st_mode)) return invalid_argument(what + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return invalid_argument(what + " is not writable: " + errno_text(errno));
  }
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)) {
    TS_LOG(Warning) << what << " is on a memory file system (tmpfs/ramfs): the disk tier "
                    << "will take RAM, not disk space";
  }
  remove_stale_private_dirs(options_.dir);
  std::string private_dir =
      (options_.dir / (kPrivatePrefix + std::to_string(::getpid()) + "-XXXXXX")).string();
  if (::mkdtemp(private_dir.data()) == nullptr) {  // mode 0700, a unique name
    const int err = errno;
    if (err == EACCES || err == EROFS || err == EPERM) {
      return invalid_argument(what + " is not writable: " + errno_text(err));
    }
    return io_error(what + ": cannot create a private directory: " + errno_text(err));
  }
  private_dir_.path = private_dir;

  const std::filesystem::path file = extent_file_path();
  fd_ = open_maybe_direct(file, O_RDWR | O_CREAT | O_CLOEXEC, direct_io_);
  if (fd_ < 0) {
    return io_error(what + ": cannot create " + file.string() + ": " + errno_text(errno));
  }
  if (::fchmod(fd_, 0600) != 0) {
    return io_error(what + ": cannot chmod " + file.string() + ": " + errno_text(errno));
  }

  const uint64_t num_extents = options_.capacity_bytes / options_.extent_bytes;
  const uint64_t bytes = num_extents * options_.extent_bytes;
  if (::fallocate(fd_, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    const std::string prefix = what + ": cannot preallocate " + format_bytes(bytes) + " (" +
                               std::to_string(num_extents) + " extents of " +
                               format_bytes(options_.extent_bytes) + ") for the disk tier: ";
    struct statvfs vfs {};
    const std::string avail =
        ::statvfs(dir.c_str(), &vfs) == 0
            ? "; " + format_bytes(uint64_t{vfs.f_bavail} * vfs.f_frsize) + " available"
            : "";
    if (err == ENOSPC || err == EDQUOT) {
      return resource_exhausted(prefix + "no space left on the device" + avail);
    }
    if (err == EFBIG) {
      return resource_exhausted(prefix + "larger than the file system allows in one file" + avail);
    }
    if (err == EOPNOTSUPP) return io_error(prefix + "the file system does not support fallocate");
    return io_error(prefix + errno_text(err));
  }

  const auto depth = static_cast<uint32_t>(options_.queue_depth);
  TS_ASSIGN_OR_RETURN(ring_, IoRing::create(depth, kFileSlots));
  TS_RETURN_IF_ERROR(ring_->set_file(0, fd_));
  slots_.resize(depth);
  free_slots_.reserve(depth);
  for (uint32_t i = depth; i > 0; --i) free_slots_.push_back(i - 1);
  reaped_.resize(depth);
  done_.reserve(depth);
  extents_.resize(num_extents);
  free_extents_.reserve(num_extents);
  for (uint64_t i = num_extents; i > 0; --i) free_extents_.push_back(static_cast<int64_t>(i - 1));
  return Status::ok();
}

DiskStore::~DiskStore() {
  if (ring_ != nullptr) {
    while (in_flight() > 0) (void)wait();  // results are dropped: nobody is left to take them
    ring_.reset();
  }
  for (const ExternalFile& f : files_) ::close(f.fd);
  if (fd_ >= 0) ::close(fd_);
  // private_dir_ is destroyed after this body and removes the directory with its file.
}

std::filesystem::path DiskStore::extent_file_path() const {
  return private_dir_.path / kExtentFileName;
}

Result<int64_t> DiskStore::allocate_extent() {
  if (free_extents_.empty()) {
    return resource_exhausted("disk tier full: all " + std::to_string(extents_.size()) +
                              " extents of " + format_bytes(options_.extent_bytes) + " in " +
                              private_dir_.path.string() + " are allocated");
  }
  const int64_t extent = free_extents_.back();
  free_extents_.pop_back();
  extents_[static_cast<size_t>(extent)].allocated = true;
  return extent;
}

void DiskStore::free_extent(int64_t extent) {
  TS_CHECK(extent >= 0 && extent < num_extents()) << "extent " << extent << " out of range";
  Extent& e = extents_[static_cast<size_t>(extent)];
  TS_CHECK(e.allocated) << "free of unallocated extent " << extent;
  TS_CHECK_EQ(e.in_flight, 0) << "free of extent " << extent << " with I/O in flight";
  e = Extent{};
  free_extents_.push_back(extent);
}

bool DiskStore::has_data(int64_t extent) const {
  TS_CHECK(extent >= 0 && extent < num_extents()) << "extent " << extent << " out of range";
  return extents_[static_cast<size_t>(extent)].has_data;
}

Status DiskStore::register_buffers(std::span<const iovec> buffers) {
  TS_CHECK(!buffers_registered_) << "register_buffers may be called once";
  TS_CHECK_EQ(in_flight(), 0) << "register_buffers with I/O in flight";
  TS_CHECK(!buffers.empty()) << "register_buffers needs at least one buffer";
  for (const iovec& b : buffers) {
    TS_CHECK(reinterpret_cast<uintptr_t>(b.iov_base) % kAlignment == 0 &&
             b.iov_len % kAlignment == 0 && b.iov_len > 0)
        << "registered buffer " << b.iov_base << " + " << b.iov_len << " is not page-aligned";
  }
  TS_RETURN_IF_ERROR(ring_->register_buffers(buffers));
  std::vector<int32_t> order(buffers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return buffers[static_cast<size_t>(a)].iov_base < buffers[static_cast<size_t>(b)].iov_base;
  });
  for (int32_t i : order) {
    buffers_.push_back(buffers[static_cast<size_t>(i)]);
    buffer_index_.push_back(i);
  }
  buffers_registered_ = true;
  return Status::ok();
}

int32_t DiskStore::find_buffer(const void* p, uint64_t bytes) const {
  // The last buffer starting at or before p; overlapping registrations may miss a candidate,
  // which only costs the fixed opcode.
  auto it = std::upper_bound(buffers_.begin(), buffers_.end(), p,
                             [](const void* q, const iovec& b) { return q < b.iov_base; });
  if (it == buffers_.begin()) return -1;
  --it;
  const auto* base = static_cast<const uint8_t*>(it->iov_base);
  const auto* q = static_cast<const uint8_t*>(p);
  if (q + bytes > base + it->iov_len) return -1;
  return buffer_index_[static_cast<size_t>(it - buffers_.begin())];
}

uint64_t DiskStore::submit_write(int64_t extent, const void* src, uint64_t bytes) {
  TS_CHECK(extent >= 0 && extent < num_extents()) << "extent " << extent << " out of range";
  Extent& e = extents_[static_cast<size_t>(extent)];
  TS_CHECK(e.allocated) << "write to unallocated extent " << extent;
  TS_CHECK_EQ(e.in_flight, 0) << "write to extent " << extent << " with I/O in flight";
  check_io_args(src, bytes, options_.extent_bytes);
  e.has_data = false;
  ++e.in_flight;
  Op op;
  op.op = DiskOp::kWrite;
  op.target = extent;
  op.buf = static_cast<uint8_t*>(const_cast<void*>(src));  // only read: the kernel writes it out
  op.bytes = op.expected = static_cast<uint32_t>(bytes);
  op.offset = static_cast<uint64_t>(extent) * options_.extent_bytes;
  op.buf_index = find_buffer(src, bytes);
  op.crc = crc32c(src, bytes);
  return enqueue(std::move(op));
}

uint64_t DiskStore::submit_read(int64_t extent, void* dst, uint64_t bytes) {
  TS_CHECK(extent >= 0 && extent < num_extents()) << "extent " << extent << " out of range";
  Extent& e = extents_[static_cast<size_t>(extent)];
  TS_CHECK(e.allocated) << "read of unallocated extent " << extent;
  TS_CHECK(e.has_data) << "read of extent " << extent
                       << " that holds no data (never written, its write is in flight, or its "
                          "last write failed)";
  TS_CHECK_EQ(bytes, e.bytes) << "a read of extent " << extent << " must ask for the bytes written";
  check_io_args(dst, bytes, options_.extent_bytes);
  ++e.in_flight;
  Op op;
  op.op = DiskOp::kRead;
  op.target = extent;
  op.buf = static_cast<uint8_t*>(dst);
  op.bytes = op.expected = static_cast<uint32_t>(bytes);
  op.offset = static_cast<uint64_t>(extent) * options_.extent_bytes;
  op.buf_index = find_buffer(dst, bytes);
  op.crc = e.crc;
  return enqueue(std::move(op));
}

Result<int32_t> DiskStore::open_file(const std::filesystem::path& path) {
  if (files_.size() + 1 >= kFileSlots) {
    return resource_exhausted("cannot open " + path.string() + ": the disk store already has " +
                              std::to_string(files_.size()) + " files open (the most it takes)");
  }
  // Checked before open: O_DIRECT on a directory fails with the EINVAL that otherwise means "no
  // O_DIRECT on this file system".
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("cannot open " + path.string() + ": " + errno_text(err));
    return io_error("cannot open " + path.string() + ": " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    return invalid_argument("cannot read " + path.string() + ": not a regular file");
  }
  bool direct = options_.direct_io;
  const int fd = open_maybe_direct(path, O_RDONLY | O_CLOEXEC, direct);
  if (fd < 0) return io_error("cannot open " + path.string() + ": " + errno_text(errno));
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {  // replaced since the stat above
    ::close(fd);
    return invalid_argument("cannot read " + path.string() + ": not a regular file");
  }
  const auto id = static_cast<int32_t>(files_.size());
  const Status s = ring_->set_file(static_cast<uint32_t>(id) + 1, fd);
  if (!s.is_ok()) {
    ::close(fd);
    return s.with_context("cannot open " + path.string());
  }
  files_.push_back(ExternalFile{path, fd, static_cast<uint64_t>(st.st_size)});
  return id;
}

uint64_t DiskStore::submit_file_read(int32_t file, uint64_t offset, void* dst, uint64_t bytes,
                                     std::optional<uint32_t> expected_crc) {
  TS_CHECK(file >= 0 && static_cast<size_t>(file) < files_.size()) << "no open file " << file;
  const ExternalFile& f = files_[static_cast<size_t>(file)];
  check_io_args(dst, bytes, kMaxIoBytes);
  TS_CHECK(offset % kAlignment == 0) << "file read offset " << offset << " is not aligned";
  TS_CHECK_LT(offset, f.size) << "file read at or past the end of " << f.path.string();
  Op op;
  op.op = DiskOp::kFileRead;
  op.target = file;
  op.buf = static_cast<uint8_t*>(dst);
  op.bytes = static_cast<uint32_t>(bytes);
  op.expected = static_cast<uint32_t>(std::min(bytes, f.size - offset));
  op.offset = offset;
  op.buf_index = find_buffer(dst, bytes);
  op.crc = expected_crc;
  return enqueue(std::move(op));
}

uint64_t DiskStore::enqueue(Op op) {
  op.ticket = next_ticket_++;
  const uint64_t ticket = op.ticket;
  queued_.push_back(std::move(op));
  return ticket;
}

void DiskStore::pump(bool block) {
  auto reap = [&] {
    const uint32_t n = ring_->reap(reaped_.data(), static_cast<uint32_t>(reaped_.size()));
    for (uint32_t i = 0; i < n; ++i) {
      const auto slot = static_cast<uint32_t>(reaped_[i].user_data);
      Op& op = slots_[slot];
      op.res = reaped_[i].res;
      done_.push_back(std::move(op));
      free_slots_.push_back(slot);
    }
  };
  // Queued operations enter the ring as slots free up, so the device never idles while the
  // caller checks checksums of what completed.
  auto fill = [&] {
    while (!queued_.empty() && !free_slots_.empty()) {
      const uint32_t slot = free_slots_.back();
      free_slots_.pop_back();
      Op& op = slots_[slot] = std::move(queued_.front());
      queued_.pop_front();
      const uint32_t file_slot =
          op.op == DiskOp::kFileRead ? static_cast<uint32_t>(op.target) + 1 : 0;
      ring_->prepare(op.op == DiskOp::kWrite ? IoKind::kWrite : IoKind::kRead, file_slot, op.buf,
                     op.bytes, op.offset, op.buf_index, slot);
    }
  };
  reap();
  fill();
  if (block && done_.empty() && free_slots_.size() < slots_.size()) {
    ring_->submit(1);
    reap();
    fill();
  }
  ring_->submit(0);
}

std::vector<DiskCompletion> DiskStore::poll() {
  pump(/*block=*/false);
  std::vector<DiskCompletion> out;
  out.reserve(done_.size());
  for (Op& op : done_) out.push_back(finish(op));
  done_.clear();
  return out;
}

std::vector<DiskCompletion> DiskStore::wait() {
  if (in_flight() == 0) return {};
  pump(/*block=*/true);
  std::vector<DiskCompletion> out;
  out.reserve(done_.size());
  for (Op& op : done_) out.push_back(finish(op));
  done_.clear();
  return out;
}

int64_t DiskStore::in_flight() const {
  return static_cast<int64_t>(queued_.size() + (slots_.size() - free_slots_.size()) + done_.size());
}

void DiskStore::set_fault_hook_for_testing(DiskFaultHook hook) { fault_hook_ = std::move(hook); }

std::string DiskStore::describe(const Op& op) const {
  const std::string size =
      std::to_string(op.bytes) + " bytes at offset " + std::to_string(op.offset);
  switch (op.op) {
    case DiskOp::kWrite:
      return "write of extent " + std::to_string(op.target) + " (" + size + " of " +
             extent_file_path().string() + ")";
    case DiskOp::kRead:
      return "read of extent " + std::to_string(op.target) + " (" + size + " of " +
             extent_file_path().string() + ")";
    case DiskOp::kFileRead:
      return "read of file " + std::to_string(op.target) + " (" + size + " of " +
             files_[static_cast<size_t>(op.target)].path.string() + ")";
  }
  return "unknown operation";
}

DiskCompletion DiskStore::finish(Op& op) {
  const DiskFault fault = fault_hook_ ? fault_hook_(op.op, op.target, op.ticket) : DiskFault::kNone;
  int32_t res = op.res;
  switch (fault) {
    case DiskFault::kEnospc:
      res = -ENOSPC;
      break;
    case DiskFault::kEio:
      res = -EIO;
      break;
    case DiskFault::kShortRead:
      res = op.expected > kAlignment ? static_cast<int32_t>(op.expected - kAlignment) : 0;
      break;
    case DiskFault::kNone:
    case DiskFault::kCorrupt:
      break;
  }
  DiskCompletion c;
  c.ticket = op.ticket;
  c.op = op.op;
  if (op.op != DiskOp::kFileRead) --extents_[static_cast<size_t>(op.target)].in_flight;
  if (res < 0) {
    c.status = errno_status(-res, describe(op));
    return c;
  }
  const auto got = static_cast<uint32_t>(res);
  if (got < op.expected) {
    const std::string detail =
        std::to_string(got) + " of " + std::to_string(op.expected) + " bytes transferred";
    c.status = op.op == DiskOp::kWrite ? io_error(describe(op) + ": short write, " + detail)
                                       : data_loss(describe(op) + ": short read, " + detail);
    return c;
  }
  if (op.op == DiskOp::kWrite) {
    Extent& e = extents_[static_cast<size_t>(op.target)];
    e.has_data = true;
    e.crc = fault == DiskFault::kCorrupt ? ~*op.crc : *op.crc;
    e.bytes = op.bytes;
    return c;
  }
  if (fault == DiskFault::kCorrupt) op.buf[op.expected / 2] ^= 0xFF;
  if (op.crc.has_value()) {
    const uint32_t actual = crc32c(op.buf, op.expected);
    if (actual != *op.crc) {
      c.status = data_loss(describe(op) + ": checksum mismatch (expected CRC32C " + hex32(*op.crc) +
                           ", read " + hex32(actual) + ")");
      return c;
    }
  }
  if (op.expected < op.bytes) std::memset(op.buf + op.expected, 0, op.bytes - op.expected);
  return c;
}

}  // namespace tierserve

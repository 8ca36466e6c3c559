#include "offload/io_ring.h"

#include <liburing.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/check.h"

namespace tierserve {
namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)); }

}  // namespace

Result<std::unique_ptr<IoRing>> IoRing::create(uint32_t entries, uint32_t file_slots) {
  TS_CHECK(entries >= 1 && entries <= 4096) << entries;
  std::unique_ptr<IoRing> ring(new IoRing());
  ring->ring_ = std::make_unique<io_uring>();
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 2 * entries;
  int rc = io_uring_queue_init_params(entries, ring->ring_.get(), &params);
  if (rc < 0) {
    return io_error("io_uring_queue_init(" + std::to_string(entries) +
                    " entries) failed: " + errno_text(-rc) +
                    (rc == -ENOSYS || rc == -EPERM ? " (io_uring disabled or unavailable)" : ""));
  }
  ring->initialized_ = true;
  if (file_slots > 0) {
    rc = io_uring_register_files_sparse(ring->ring_.get(), file_slots);
    if (rc < 0) {
      return io_error("io_uring_register_files_sparse(" + std::to_string(file_slots) +
                      ") failed: " + errno_text(-rc) + " (needs Linux 5.19 or later)");
    }
  }
  return ring;
}

IoRing::~IoRing() {
  if (initialized_) io_uring_queue_exit(ring_.get());
}

Status IoRing::register_buffers(std::span<const iovec> buffers) {
  const int rc =
      io_uring_register_buffers(ring_.get(), buffers.data(), static_cast<unsigned>(buffers.size()));
  if (rc == -ENOMEM) {
    return resource_exhausted("io_uring_register_buffers: " + errno_text(-rc) +
                              " (registered buffers count against RLIMIT_MEMLOCK; raise it with "
                              "`ulimit -l`)");
  }
  if (rc < 0) {
    return io_error("io_uring_register_buffers(" + std::to_string(buffers.size()) +
                    " buffers) failed: " + errno_text(-rc));
  }
  return Status::ok();
}

Status IoRing::set_file(uint32_t slot, int fd) {
  const int rc = io_uring_register_files_update(ring_.get(), slot, &fd, 1);
  if (rc < 0) {
    return io_error("io_uring_register_files_update(slot " + std::to_string(slot) +
                    ") failed: " + errno_text(-rc));
  }
  return Status::ok();
}

void IoRing::prepare(IoKind kind, uint32_t slot, void* buf, uint32_t len, uint64_t offset,
                     int32_t buf_index, uint64_t user_data) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  TS_CHECK(sqe != nullptr) << "io_uring submission queue full: the caller exceeded its entries";
  const int fd = static_cast<int>(slot);
  if (kind == IoKind::kRead) {
    if (buf_index >= 0) {
      io_uring_prep_read_fixed(sqe, fd, buf, len, offset, buf_index);
    } else {
      io_uring_prep_read(sqe, fd, buf, len, offset);
    }
  } else {
    if (buf_index >= 0) {
      io_uring_prep_write_fixed(sqe, fd, buf, len, offset, buf_index);
    } else {
      io_uring_prep_write(sqe, fd, buf, len, offset);
    }
  }
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, user_data);
}

void IoRing::submit(uint32_t wait_for) {
  for (;;) {
    const int rc = wait_for > 0 ? io_uring_submit_and_wait(ring_.get(), wait_for)
                                : io_uring_submit(ring_.get());
    if (rc >= 0) return;
    if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
      if (wait_for == 0 && rc != -EINTR) return;  // the entries stay queued for the next call
      continue;
    }
    TS_CHECK(false) << "io_uring_enter failed: " << errno_text(-rc);
  }
}

uint32_t IoRing::reap(IoResult* out, uint32_t max) {
  io_uring_cqe* cqe = nullptr;
  uint32_t n = 0;
  while (n < max && io_uring_peek_cqe(ring_.get(), &cqe) == 0 && cqe != nullptr) {
    out[n].user_data = io_uring_cqe_get_data64(cqe);
    out[n].res = cqe->res;
    io_uring_cqe_seen(ring_.get(), cqe);
    ++n;
  }
  return n;
}

}  // namespace tierserve

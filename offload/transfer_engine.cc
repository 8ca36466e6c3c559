#include "offload/transfer_engine.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/check.h"

namespace tierserve {
namespace {

// One queued transfer.
struct Job {
  TransferTicket ticket = 0;
  DiskOp op = DiskOp::kRead;  // for disk jobs
  void* dst = nullptr;
  const void* src = nullptr;
  uint64_t bytes = 0;
  int64_t target = 0;  // extent, or file id
  uint64_t offset = 0;
  std::optional<uint32_t> crc;
  uint64_t after_fence = 0;  // copy jobs: compute-stream fence to wait for first
  ForwardCopy then;          // disk reads: the copy that follows a successful read
};

}  // namespace

Status TransferEngineOptions::validate() const {
  if (copy_threads < 1 || copy_threads > 16) {
    return invalid_argument("transfer copy threads must be in [1, 16], got " +
                            std::to_string(copy_threads));
  }
  return Status::ok();
}

struct TransferEngine::Impl {
  Backend* backend = nullptr;
  std::unique_ptr<DiskStore> disk;

  mutable std::mutex mu;
  std::condition_variable work_cv;  // new copy or disk job, or stopping
  std::condition_variable done_cv;  // a transfer completed
  bool stopping = false;
  bool io_running = false;  // the I/O thread may still hand copy threads forward copies
  TransferTicket next_ticket = 1;
  std::deque<Job> copy_jobs, disk_jobs;
  // Every ticket not yet waited for: absent from `finished` while in flight.
  std::unordered_map<TransferTicket, Status> finished;
  int64_t pending = 0;
  TransferStats stats;
  std::vector<int64_t> free_extents;  // engine-side extent allocation (LIFO)
  int64_t num_extents = 0;

  std::vector<std::thread> copy_threads;
  std::thread io_thread;

  TransferTicket enqueue(Job job, bool disk_job) {
    std::lock_guard<std::mutex> lock(mu);
    TS_CHECK(!stopping) << "transfer submitted while the engine stops";
    job.ticket = next_ticket++;
    ++pending;
    const TransferTicket t = job.ticket;
    (disk_job ? disk_jobs : copy_jobs).push_back(std::move(job));
    work_cv.notify_all();
    return t;
  }

  void complete(TransferTicket ticket, Status status) {
    std::lock_guard<std::mutex> lock(mu);
    if (!status.is_ok()) ++stats.failures;
    finished.emplace(ticket, std::move(status));
    done_cv.notify_all();
  }

  void copy_loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return (stopping && !io_running) || !copy_jobs.empty(); });
        if (copy_jobs.empty()) return;  // stopping, and nothing left or to come
        job = copy_jobs.front();
        copy_jobs.pop_front();
      }
      if (job.after_fence != 0) backend->wait_fence(job.after_fence);
      backend->copy(job.dst, job.src, job.bytes);
      {
        std::lock_guard<std::mutex> lock(mu);
        ++stats.copies;
        stats.copy_bytes += job.bytes;
      }
      complete(job.ticket, Status::ok());
    }
  }

  // Owns the disk store: submits queued jobs, reaps completions, and maps the store's tickets
  // back to the engine's.
  void io_loop() {
    std::unordered_map<uint64_t, Job> in_disk;  // disk store ticket -> job
    for (;;) {
      std::vector<Job> jobs;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stopping || !disk_jobs.empty() || !in_disk.empty(); });
        if (stopping && disk_jobs.empty() && in_disk.empty()) {
          io_running = false;
          work_cv.notify_all();
          return;
        }
        jobs.assign(disk_jobs.begin(), disk_jobs.end());
        disk_jobs.clear();
      }
      for (Job& job : jobs) {
        uint64_t t = 0;
        switch (job.op) {
          case DiskOp::kWrite:
            t = disk->submit_write(job.target, job.src, job.bytes);
            break;
          case DiskOp::kRead:
            t = disk->submit_read(job.target, job.dst, job.bytes);
            break;
          case DiskOp::kFileRead:
            t = disk->submit_file_read(static_cast<int32_t>(job.target), job.offset, job.dst,
                                       job.bytes, job.crc);
            break;
        }
        in_disk.emplace(t, std::move(job));
      }
      if (!jobs.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        stats.max_disk_in_flight =
            std::max(stats.max_disk_in_flight, static_cast<int64_t>(in_disk.size()));
      }
      // Blocks until at least one completes; new jobs that arrive meanwhile wait for it, which
      // is bounded by one I/O's latency.
      for (DiskCompletion& c : disk->wait()) {
        auto it = in_disk.find(c.ticket);
        TS_CHECK(it != in_disk.end()) << "unknown disk completion " << c.ticket;
        const Job job = std::move(it->second);
        in_disk.erase(it);
        {
          std::lock_guard<std::mutex> lock(mu);
          if (job.op == DiskOp::kWrite) {
            ++stats.disk_writes;
            stats.disk_write_bytes += job.bytes;
          } else {
            ++stats.disk_reads;
            stats.disk_read_bytes += job.bytes;
          }
        }
        if (job.then.dst != nullptr && c.status.is_ok()) {
          // The read is only the first leg: a copy thread carries the bytes on.
          Job copy;
          copy.ticket = job.ticket;
          copy.dst = job.then.dst;
          copy.src = job.dst;
          copy.bytes = job.bytes;
          copy.after_fence = job.then.after_fence;
          std::lock_guard<std::mutex> lock(mu);
          copy_jobs.push_back(copy);
          work_cv.notify_all();
          continue;
        }
        complete(job.ticket, std::move(c.status));
      }
    }
  }
};

TransferEngine::TransferEngine(std::unique_ptr<Impl> impl, uint64_t extent_bytes)
    : impl_(std::move(impl)), extent_bytes_(extent_bytes) {}

Result<std::unique_ptr<TransferEngine>> TransferEngine::create(
    Backend* backend, std::unique_ptr<DiskStore> disk, const TransferEngineOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>();
  impl->backend = backend;
  uint64_t extent_bytes = 0;
  if (disk != nullptr) {
    extent_bytes = disk->extent_bytes();
    // Every extent is taken from the store now, while one thread owns it; the engine hands
    // them out itself, so that allocation never races with the I/O thread.
    impl->num_extents = disk->num_extents();
    for (int64_t i = 0; i < impl->num_extents; ++i) {
      TS_ASSIGN_OR_RETURN(int64_t e, disk->allocate_extent());
      impl->free_extents.push_back(e);
    }
    std::reverse(impl->free_extents.begin(), impl->free_extents.end());
    impl->disk = std::move(disk);
  }
  std::unique_ptr<TransferEngine> engine(new TransferEngine(std::move(impl), extent_bytes));
  Impl* p = engine->impl_.get();
  // io_running is set before any thread starts: copy threads read it when stopping.
  p->io_running = p->disk != nullptr;
  for (int i = 0; i < options.copy_threads; ++i)
    p->copy_threads.emplace_back([p] { p->copy_loop(); });
  if (p->disk != nullptr) p->io_thread = std::thread([p] { p->io_loop(); });
  return engine;
}

TransferEngine::~TransferEngine() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->work_cv.notify_all();
  }
  for (std::thread& t : impl_->copy_threads) t.join();
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
}

Result<int64_t> TransferEngine::allocate_extent() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->free_extents.empty()) {
    return resource_exhausted(impl_->disk == nullptr ? "no disk tier (--offload-dir)"
                                                     : "the disk tier is full");
  }
  const int64_t e = impl_->free_extents.back();
  impl_->free_extents.pop_back();
  return e;
}

void TransferEngine::free_extent(int64_t extent) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  TS_CHECK(extent >= 0 && extent < impl_->num_extents) << "extent " << extent;
  impl_->free_extents.push_back(extent);
  TS_CHECK_LE(static_cast<int64_t>(impl_->free_extents.size()), impl_->num_extents)
      << "extent " << extent << " freed twice";
}

int64_t TransferEngine::num_free_extents() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return static_cast<int64_t>(impl_->free_extents.size());
}

int64_t TransferEngine::num_extents() const { return impl_->num_extents; }

TransferTicket TransferEngine::copy(void* dst, const void* src, size_t bytes,
                                    uint64_t after_fence) {
  Job job;
  job.after_fence = after_fence;
  job.dst = dst;
  job.src = src;
  job.bytes = bytes;
  return impl_->enqueue(std::move(job), false);
}

TransferTicket TransferEngine::disk_write(int64_t extent, const void* src, uint64_t bytes) {
  TS_CHECK(has_disk()) << "disk write without a disk tier";
  Job job;
  job.op = DiskOp::kWrite;
  job.src = src;
  job.bytes = bytes;
  job.target = extent;
  return impl_->enqueue(std::move(job), true);
}

TransferTicket TransferEngine::disk_read(int64_t extent, void* dst, uint64_t bytes,
                                         ForwardCopy then) {
  TS_CHECK(has_disk()) << "disk read without a disk tier";
  Job job;
  job.then = then;
  job.op = DiskOp::kRead;
  job.dst = dst;
  job.bytes = bytes;
  job.target = extent;
  return impl_->enqueue(std::move(job), true);
}

TransferTicket TransferEngine::file_read(int32_t file, uint64_t offset, void* dst, uint64_t bytes,
                                         std::optional<uint32_t> expected_crc, ForwardCopy then) {
  TS_CHECK(has_disk()) << "file read without a disk tier";
  Job job;
  job.then = then;
  job.op = DiskOp::kFileRead;
  job.dst = dst;
  job.bytes = bytes;
  job.target = file;
  job.offset = offset;
  job.crc = expected_crc;
  return impl_->enqueue(std::move(job), true);
}

bool TransferEngine::done(TransferTicket ticket) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->finished.count(ticket) > 0;
}

bool TransferEngine::done_ok(TransferTicket ticket) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->finished.find(ticket);
  return it != impl_->finished.end() && it->second.is_ok();
}

Status TransferEngine::wait(TransferTicket ticket) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  TS_CHECK(ticket > 0 && ticket < impl_->next_ticket) << "unknown transfer ticket " << ticket;
  impl_->done_cv.wait(lock, [&] { return impl_->finished.count(ticket) > 0; });
  auto it = impl_->finished.find(ticket);
  Status s = std::move(it->second);
  impl_->finished.erase(it);
  --impl_->pending;
  return s;
}

Status TransferEngine::wait_all(std::span<const TransferTicket> tickets) {
  Status first = Status::ok();
  for (TransferTicket t : tickets) {
    Status s = wait(t);
    if (first.is_ok() && !s.is_ok()) first = std::move(s);
  }
  return first;
}

int64_t TransferEngine::pending() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->pending;
}

TransferStats TransferEngine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace tierserve

#include "bench/link_bounds.h"

#include <spawn.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "common/units.h"
#include "offload/disk_store.h"

extern char** environ;

namespace tierserve::bench {

namespace fs = std::filesystem;

Result<double> measure_copy_bandwidth(Backend* backend) {
  constexpr size_t kBytes = size_t{512} << 20;
  // Pinned host memory where the backend has it (the host tier's kind), else ordinary memory.
  std::vector<char> pageable;
  TS_ASSIGN_OR_RETURN(void* pinned, backend->allocate_pinned_host(kBytes));
  char* host = static_cast<char*>(pinned);
  if (host == nullptr) {
    pageable.resize(kBytes);
    host = pageable.data();
  }
  std::memset(host, 1, kBytes);
  auto device_or = backend->allocate(kBytes);
  if (!device_or.is_ok()) {
    if (pinned != nullptr) backend->free_pinned_host(pinned);
    return device_or.status();
  }
  void* device = device_or.value();
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    backend->copy(device, host, kBytes);
    backend->synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(kBytes) / s);
  }
  backend->deallocate(device);
  if (pinned != nullptr) backend->free_pinned_host(pinned);
  return best;
}

Result<double> measure_device_bandwidth(Backend* backend) {
  constexpr size_t kBytes = size_t{1} << 30;
  TS_ASSIGN_OR_RETURN(void* src, backend->allocate(kBytes));
  auto dst_or = backend->allocate(kBytes);
  if (!dst_or.is_ok()) {
    backend->deallocate(src);
    return dst_or.status();
  }
  void* dst = dst_or.value();
  double best = 0;
  for (int i = 0; i < 4; ++i) {  // the first pass touches the pages
    const auto t0 = std::chrono::steady_clock::now();
    backend->copy(dst, src, kBytes);
    backend->synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) best = std::max(best, 2.0 * static_cast<double>(kBytes) / s);
  }
  backend->deallocate(dst);
  backend->deallocate(src);
  return best;
}

namespace {

// DiskStore reading `path` once from start to end, in bytes/s.
Result<double> disk_store_read(const fs::path& dir, const fs::path& path) {
  constexpr uint64_t kRead = 8 * kMiB, kHuge = 2 * kMiB;
  constexpr int kDepth = 32;
  DiskStoreOptions o;
  o.dir = dir;
  o.extent_bytes = kRead;
  o.capacity_bytes = kRead;
  o.queue_depth = kDepth;
  TS_ASSIGN_OR_RETURN(std::unique_ptr<DiskStore> store, DiskStore::create(o));
  TS_ASSIGN_OR_RETURN(const int32_t file, store->open_file(path));
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec) / kRead * kRead;
  if (ec || size == 0) return io_error(path.string() + ": no data to read");
  const uint64_t bytes = kDepth * kRead;
  void* map =
      mmap(nullptr, bytes + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return resource_exhausted("no memory for read buffers");
  char* base = static_cast<char*>(map) + (kHuge - reinterpret_cast<uintptr_t>(map) % kHuge) % kHuge;
  madvise(base, bytes, MADV_HUGEPAGE);
  std::memset(base, 0, bytes);
  std::vector<iovec> iov = {{base, bytes}};
  (void)store->register_buffers(iov);  // an optimisation only
  std::vector<char*> free;
  for (int i = 0; i < kDepth; ++i) free.push_back(base + i * kRead);
  std::unordered_map<uint64_t, char*> buffer_of;
  Status status = Status::ok();
  uint64_t next = 0, done = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (done < size && status.is_ok()) {
    while (next < size && !free.empty()) {
      char* buf = free.back();
      free.pop_back();
      buffer_of[store->submit_file_read(file, next, buf, kRead)] = buf;
      next += kRead;
    }
    for (const DiskCompletion& c : store->wait()) {
      if (!c.status.is_ok() && status.is_ok()) status = c.status;
      free.push_back(buffer_of[c.ticket]);
      buffer_of.erase(c.ticket);
      done += kRead;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  while (!buffer_of.empty()) {
    for (const DiskCompletion& c : store->wait()) buffer_of.erase(c.ticket);
  }
  store.reset();
  munmap(map, bytes + kHuge);
  if (!status.is_ok()) return status;
  return static_cast<double>(size) / s;
}

}  // namespace

Result<DiskReadBandwidth> disk_read_bandwidth(const fs::path& dir) {
  const fs::path file = dir / ("tierserve_fio_" + std::to_string(getpid()) + ".tmp");
  const fs::path out = dir / ("tierserve_fio_" + std::to_string(getpid()) + ".json");
  const std::string filename = "--filename=" + file.string();
  const std::string output = "--output=" + out.string();
  std::vector<std::string> args = {"fio",
                                   "--name=read",
                                   filename,
                                   "--size=1G",
                                   "--ioengine=io_uring",
                                   "--direct=1",
                                   "--rw=read",
                                   "--bs=4M",
                                   "--iodepth=64",
                                   "--runtime=5",
                                   "--time_based",
                                   "--output-format=json",
                                   output};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "fio", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) return not_found("fio is not installed (" + std::string(std::strerror(rc)) + ")");
  int status = 0;
  waitpid(pid, &status, 0);
  DiskReadBandwidth bw;
  Result<double> own = disk_store_read(dir, file);
  std::error_code ec;
  fs::remove(file, ec);
  if (!own.is_ok()) return own.status().with_context("reading fio's file with DiskStore");
  bw.disk_store = own.value();
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  fs::remove(out, ec);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return io_error("fio on " + dir.string() + " failed (status " + std::to_string(status) + ")");
  }
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.contains("jobs") || j["jobs"].empty()) {
    return io_error("fio on " + dir.string() + ": unreadable output");
  }
  bw.fio = j["jobs"][0]["read"]["bw_bytes"].get<double>();
  return bw;
}

}  // namespace tierserve::bench

// Read bandwidth of the disk tier: DiskStore (io_uring, O_DIRECT, registered buffers and files)
// reading back every extent of a file it wrote, with the CRC32C of each extent checked, and the
// same bytes read through DiskStore's file-read path without a checksum (the I/O path alone).
// Each figure is printed next to its bound, fio's best read bandwidth on the same file system,
// when given as --bound-gbps; medians over --repeats passes. --samples appends each pass's
// figures to a file, for benchmarks/run_disk_bench, which alternates single passes of this
// program with fio runs so that both see the same load on a shared disk. The page cache never
// serves a read: the program stops if the store fell back to buffered I/O. DiskStore keeps
// --queue-depth reads in the kernel; the program hands it twice as many buffers so that the next
// reads are queued while checksums are checked. The buffers are huge-page backed (see
// MappedBuffer); one more row reads into buffers of 4 KiB pages, to show what that costs. Usage:
//   disk_bench --dir DIR [--size-gb 2] [--extent-kb 1024] [--queue-depth 32] [--repeats 5]
//              [--bound-gbps X] [--samples FILE]
#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/units.h"
#include "offload/crc32c.h"
#include "offload/disk_store.h"

namespace tierserve {
namespace {

using Clock = std::chrono::steady_clock;

volatile uint32_t g_sink = 0;  // keeps the in-memory CRC loop from being optimized away

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Args {
  std::string dir;
  double size_gb = 2;
  uint64_t extent_kb = 1024;
  int32_t queue_depth = 32;
  int repeats = 5;
  double bound_gbps = 0;  // fio's best; 0: not measured
  std::string samples;    // appends "name<TAB>bounded<TAB>GB/s" lines, one per path and pass
};

// GB/s figures of one path over the repeats.
struct Series {
  std::string name;
  bool bounded = true;  // an I/O figure, printed against the fio bound
  std::vector<double> gbps;
};

// Anonymous memory aligned to 2 MiB, advised to use transparent huge pages or not to. With huge
// pages (as the host pool's memory should be) an extent spans few physical pages and one I/O is
// one device request; with 4 KiB pages a 1 MiB read has 256 segments, more than virtio-blk takes
// in one request (max_segments 254 on the machine of the recorded results), and the block layer
// splits it (halving read bandwidth on that machine). Huge pages are advice: where THP is off (or
// the advice fails) the memory has small pages.
class MappedBuffer {
 public:
  MappedBuffer(uint64_t bytes, bool huge_pages) : map_bytes_(bytes + kHuge) {
    void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    map_ = static_cast<uint8_t*>(p);
    data_ = map_ + (kHuge - reinterpret_cast<uintptr_t>(map_) % kHuge) % kHuge;
    madvise(data_, bytes, huge_pages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  }
  ~MappedBuffer() {
    if (map_ != nullptr) munmap(map_, map_bytes_);
  }
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  uint8_t* data() const { return data_; }

 private:
  static constexpr uint64_t kHuge = 2 * kMiB;
  uint64_t map_bytes_;
  uint8_t* map_ = nullptr;
  uint8_t* data_ = nullptr;
};

// Buffers for operations of `bytes` each, carved from one allocation.
struct Slots {
  uint8_t* base = nullptr;
  uint64_t bytes = 0;
  std::vector<uint32_t> free;
  Slots(uint8_t* b, uint64_t n, uint32_t count) : base(b), bytes(n) {
    for (uint32_t i = count; i > 0; --i) free.push_back(i - 1);
  }
  uint8_t* at(uint32_t i) const { return base + i * bytes; }
};

// Runs `n` operations through `store`, at most `slots.free.size()` at once: `submit(i, buf)`
// starts operation i into or from a free buffer and returns its ticket. Aborts the program on
// any failed completion (a benchmark must not time failures).
void pipeline(DiskStore& store, Slots& slots, int64_t n,
              const std::function<uint64_t(int64_t, uint8_t*)>& submit) {
  std::unordered_map<uint64_t, uint32_t> slot_of;
  int64_t next = 0, done = 0;
  while (done < n) {
    while (next < n && !slots.free.empty()) {
      const uint32_t s = slots.free.back();
      slots.free.pop_back();
      slot_of[submit(next++, slots.at(s))] = s;
    }
    for (const DiskCompletion& c : store.wait()) {
      if (!c.status.is_ok()) {
        std::fprintf(stderr, "disk_bench: %s\n", c.status.to_string().c_str());
        std::exit(1);
      }
      auto it = slot_of.find(c.ticket);
      slots.free.push_back(it->second);
      slot_of.erase(it);
      ++done;
    }
  }
}

std::string format_row(const Series& s, double bound) {
  const double med = median(s.gbps);
  const auto [lo, hi] = std::minmax_element(s.gbps.begin(), s.gbps.end());
  char buf[256];
  if (s.bounded && bound > 0) {
    std::snprintf(buf, sizeof(buf), "| %s | %.2f | %.2f-%.2f | %.2f | %.2f |", s.name.c_str(), med,
                  *lo, *hi, bound, med / bound);
  } else {
    std::snprintf(buf, sizeof(buf), "| %s | %.2f | %.2f-%.2f | %s | - |", s.name.c_str(), med, *lo,
                  *hi, s.bounded ? "not measured" : "- (CPU cost, not I/O)");
  }
  return buf;
}

int fail(const Status& s) {
  std::fprintf(stderr, "disk_bench: %s\n", s.to_string().c_str());
  return 1;
}

int run(const Args& a) {
  const uint64_t extent = a.extent_kb * kKiB;
  DiskStoreOptions o;
  o.dir = a.dir;
  o.extent_bytes = extent;
  o.capacity_bytes = static_cast<uint64_t>(a.size_gb * static_cast<double>(kGiB));
  o.queue_depth = a.queue_depth;
  auto created = DiskStore::create(o);
  if (!created.is_ok()) return fail(created.status());
  DiskStore& store = *created.value();
  if (!store.direct_io()) {
    std::fprintf(stderr, "disk_bench: %s refuses O_DIRECT; reads would come from the page cache\n",
                 a.dir.c_str());
    return 1;
  }
  const int64_t n = store.num_extents();
  const uint64_t total = static_cast<uint64_t>(n) * extent;

  // Two sets of 2 x queue_depth buffers, one huge-page backed and one of 4 KiB pages, both
  // registered.
  const uint32_t num_slots = 2 * static_cast<uint32_t>(a.queue_depth);
  const uint64_t slot_bytes = extent * num_slots;
  MappedBuffer huge_mem(slot_bytes, /*huge_pages=*/true), small_mem(slot_bytes, false);
  if (huge_mem.data() == nullptr || small_mem.data() == nullptr) {
    std::fprintf(stderr, "disk_bench: cannot map 2 x %s of host buffers\n",
                 format_bytes(slot_bytes).c_str());
    return 1;
  }
  std::mt19937_64 rng(1);
  for (uint64_t i = 0; i < slot_bytes / 8; ++i) {
    reinterpret_cast<uint64_t*>(huge_mem.data())[i] = rng();
    reinterpret_cast<uint64_t*>(small_mem.data())[i] = 0;
  }
  const iovec iov[2] = {{huge_mem.data(), slot_bytes}, {small_mem.data(), slot_bytes}};
  if (Status s = store.register_buffers(iov); !s.is_ok()) return fail(s);
  Slots huge(huge_mem.data(), extent, num_slots), small(small_mem.data(), extent, num_slots);

  std::printf(
      "disk_bench: %s, %s in %lld extents of %s, queue depth %d (%u host buffers), "
      "O_DIRECT, registered buffers and files; medians of %d passes\n",
      a.dir.c_str(), format_bytes(total).c_str(), static_cast<long long>(n),
      format_bytes(extent).c_str(), a.queue_depth, num_slots, a.repeats);
  for (int64_t i = 0; i < n; ++i) (void)store.allocate_extent().value();
  auto t0 = Clock::now();
  pipeline(store, huge, n, [&](int64_t i, uint8_t* buf) {
    std::memcpy(buf, &i, sizeof(i));  // every extent differs
    return store.submit_write(i, buf, extent);
  });
  std::printf("wrote %s through DiskStore in %.2f s\n", format_bytes(total).c_str(),
              seconds_since(t0));

  auto file = store.open_file(store.extent_file_path());
  if (!file.is_ok()) return fail(file.status());
  std::vector<Series> series = {{"DiskStore read, CRC32C checked", true, {}},
                                {"DiskStore file read, no CRC", true, {}},
                                {"DiskStore read, CRC32C checked, 4 KiB-page buffers", true, {}},
                                {"CRC32C in memory, 1 thread", false, {}}};
  const double gb = static_cast<double>(total) / 1e9;
  auto timed = [&](Series& s, const std::function<void()>& pass) {
    const auto start = Clock::now();
    pass();
    s.gbps.push_back(gb / seconds_since(start));
  };
  for (int r = 0; r < a.repeats; ++r) {
    timed(series[0], [&] {
      pipeline(store, huge, n,
               [&](int64_t i, uint8_t* buf) { return store.submit_read(i, buf, extent); });
    });
    timed(series[1], [&] {
      pipeline(store, huge, n, [&](int64_t i, uint8_t* buf) {
        return store.submit_file_read(file.value(), static_cast<uint64_t>(i) * extent, buf, extent);
      });
    });
    timed(series[2], [&] {
      pipeline(store, small, n,
               [&](int64_t i, uint8_t* buf) { return store.submit_read(i, buf, extent); });
    });
    // The check's CPU cost over the same volume, from the (cache-exceeding) host buffers.
    timed(series[3], [&] {
      uint32_t sink = 0;
      for (int64_t i = 0; i < n; ++i)
        sink ^= crc32c(huge.at(static_cast<uint32_t>(i % num_slots)), extent);
      g_sink = sink;
    });
  }

  std::string table =
      "| path | read GB/s (median) | range | bound: fio best GB/s | ratio |\n|---|---|---|---|---|";
  for (const Series& s : series) table += "\n" + format_row(s, a.bound_gbps);
  std::printf("%s\n", table.c_str());
  if (a.bound_gbps > 0) {
    const double ratio = median(series[0].gbps) / a.bound_gbps;
    std::printf("DiskStore (CRC checked) / fio best = %.2f (target >= 0.80: %s)\n", ratio,
                ratio >= 0.8 ? "met" : "NOT met");
  }
  if (!a.samples.empty()) {
    std::ofstream out(a.samples, std::ios::app);
    for (const Series& s : series) {
      for (double v : s.gbps) out << s.name << '\t' << (s.bounded ? 1 : 0) << '\t' << v << '\n';
    }
    if (!out) {
      std::fprintf(stderr, "disk_bench: cannot write %s\n", a.samples.c_str());
      return 1;
    }
  }
  return 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: disk_bench --dir DIR [--size-gb 2] [--extent-kb 1024] [--queue-depth 32] "
               "[--repeats 5] [--bound-gbps X] [--samples FILE]\n");
}

}  // namespace
}  // namespace tierserve

int main(int argc, char** argv) {
  tierserve::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      tierserve::usage();
      return 2;
    }
    const char* v = argv[++i];
    char* end = nullptr;
    if (arg == "--dir") {
      a.dir = v;
      continue;
    } else if (arg == "--samples") {
      a.samples = v;
      continue;
    } else if (arg == "--size-gb") {
      a.size_gb = std::strtod(v, &end);
    } else if (arg == "--bound-gbps") {
      a.bound_gbps = std::strtod(v, &end);
    } else if (arg == "--extent-kb") {
      a.extent_kb = std::strtoull(v, &end, 10);
    } else if (arg == "--queue-depth") {
      a.queue_depth = static_cast<int32_t>(std::strtol(v, &end, 10));
    } else if (arg == "--repeats") {
      a.repeats = static_cast<int>(std::strtol(v, &end, 10));
    } else {
      tierserve::usage();
      return 2;
    }
    if (end == v || *end != '\0') {
      std::fprintf(stderr, "disk_bench: bad value for %s: %s\n", arg.c_str(), v);
      return 2;
    }
  }
  if (a.dir.empty() || a.size_gb <= 0 || a.repeats < 1 || a.extent_kb % 4 != 0) {
    tierserve::usage();
    return 2;
  }
  return tierserve::run(a);
}

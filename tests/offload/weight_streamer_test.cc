// WeightStreamer on its own, over a small fake set of units in every tier: the views it serves
// are byte-identical to the resident ones, the ring is reused and keeps `depth` units in flight,
// a failed disk read is returned (never used), and nothing leaks.
#include "offload/weight_streamer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <set>

#include "common/units.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

// Device memory is plain host memory; counts what is outstanding. No ops.
class FakeBackend : public Backend {
 public:
  std::string_view name() const override { return "fake"; }
  // kCuda stands for a device whose memory the disk cannot read into (bounce buffers).
  DeviceKind device() const override { return device_; }
  void set_device(DeviceKind d) { device_ = d; }
  uint64_t memory_capacity() const override { return 1ull << 30; }
  Result<void*> allocate(size_t bytes) override {
    void* p = std::aligned_alloc(4096, align_up(bytes, 4096));
    ++live_;
    return p;
  }
  void deallocate(void* ptr) override {
    std::free(ptr);
    --live_;
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    copies_.fetch_add(1);
    std::memcpy(dst, src, bytes);
  }
  void synchronize() override {}
  // Fences as a GPU backend hands them out, counted; a wait "passes" fences up to its own.
  uint64_t record_fence() override { return ++recorded_; }
  void wait_fence(uint64_t fence) override {
    TS_CHECK(fence > 0 && fence <= recorded_.load()) << "fence " << fence << " never recorded";
    waits_.fetch_add(1);
    uint64_t seen = passed_.load();
    while (fence > seen && !passed_.compare_exchange_weak(seen, fence)) {
    }
  }
  uint64_t fences_recorded() const { return recorded_.load(); }
  uint64_t fence_waits() const { return waits_.load(); }
  uint64_t fences_passed() const { return passed_.load(); }
  void gemm(const TensorView&, const TensorView&, const TensorView*, const TensorView&) override {
    fail();
  }
  void rmsnorm(const TensorView&, const TensorView&, float, const TensorView&) override { fail(); }
  void add_rmsnorm(const TensorView&, const TensorView&, const TensorView&, float,
                   const TensorView&) override {
    fail();
  }
  void rope(const TensorView&, const TensorView&, const int32_t*, const RopeTable&) override {
    fail();
  }
  void silu_mul(const TensorView&, const TensorView&, const TensorView&) override { fail(); }
  void embedding(const int32_t*, const TensorView&, const TensorView&) override { fail(); }
  void gather_rows(const TensorView&, const int32_t*, const TensorView&) override { fail(); }
  void softmax(const TensorView&) override { fail(); }
  void write_kv(int32_t, const TensorView&, const TensorView&, const AttentionMetadata&,
                const KvCacheView&) override {
    fail();
  }
  void paged_attention(int32_t, const TensorView&, const AttentionMetadata&, const KvCacheView&,
                       const AttentionParams&, const TensorView&) override {
    fail();
  }

  int64_t live() const { return live_; }
  int64_t copies() const { return copies_.load(); }

 private:
  static void fail() { TS_CHECK(false) << "no ops on the fake backend"; }
  DeviceKind device_ = DeviceKind::kCpu;
  int64_t live_ = 0;  // allocations not yet freed (engine thread only)
  std::atomic<int64_t> copies_{0};
  std::atomic<uint64_t> recorded_{0}, waits_{0}, passed_{0};
};

// Unit u's tensors: a [64 + 8u] f32 tensor, an absent one, and a [3, 40] f32 tensor, with
// values that name the unit and the element.
constexpr int kTensorsPerUnit = 3;
int64_t first_numel(int u) { return 64 + 8 * u; }
constexpr int64_t kSecondNumel = 120;
float value(int u, int t, int64_t i) { return static_cast<float>(u * 100000 + t * 10000 + i); }

// Writes unit u's image at `dst` (tensor 0 at 0, tensor 2 at a 64-byte aligned offset).
uint64_t second_offset(int u) { return align_up(static_cast<uint64_t>(first_numel(u)) * 4, 64); }
uint64_t image_bytes(int u) { return second_offset(u) + kSecondNumel * 4; }
WeightUnit write_unit(int u, char* dst) {
  WeightUnit w;
  w.name = "unit " + std::to_string(u);
  float* a = reinterpret_cast<float*>(dst);
  float* b = reinterpret_cast<float*>(dst + second_offset(u));
  for (int64_t i = 0; i < first_numel(u); ++i) a[i] = value(u, 0, i);
  for (int64_t i = 0; i < kSecondNumel; ++i) b[i] = value(u, 2, i);
  w.tensors.resize(kTensorsPerUnit);
  w.tensors[0] = TensorView::contiguous(a, DType::kF32, {first_numel(u)});
  w.tensors[2] = TensorView::contiguous(b, DType::kF32, {3, 40});
  return w;
}

void expect_unit(int u, const WeightUnit& w) {
  ASSERT_EQ(w.tensors.size(), static_cast<size_t>(kTensorsPerUnit)) << u;
  EXPECT_EQ(w.tensors[1].data, nullptr);
  ASSERT_EQ(w.tensors[0].numel(), first_numel(u));
  ASSERT_EQ(w.tensors[2].dim(1), 40);
  for (int64_t i = 0; i < first_numel(u); ++i) {
    ASSERT_EQ(w.tensors[0].ptr<float>()[i], value(u, 0, i)) << "unit " << u << " element " << i;
  }
  for (int64_t i = 0; i < kSecondNumel; ++i) {
    ASSERT_EQ(w.tensors[2].ptr<float>()[i], value(u, 2, i)) << "unit " << u << " element " << i;
  }
}

// A scratch directory in the build tree, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    std::string templ = std::string(TIERSERVE_TEST_TMP_DIR) + "/weight_streamer_XXXXXX";
    TS_CHECK(mkdtemp(templ.data()) != nullptr) << templ;
    path_ = templ;
  }
  ~ScratchDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Units 0 and 6 resident; 1 and 4 host; 2 and 5 disk (one-time copy); 3 disk read in place
// from a file where its tensors sit at unaligned (but f32-aligned) offsets.
struct Fixture {
  FakeBackend backend;
  ScratchDir dir;
  std::vector<WeightTier> tiers = {WeightTier::kDevice, WeightTier::kHost, WeightTier::kDisk,
                                   WeightTier::kDisk,   WeightTier::kHost, WeightTier::kDisk,
                                   WeightTier::kDevice};
  std::vector<bool> in_place = {false, false, false, true, false, false, false};

  int num_streamed() const {
    int n = 0;
    for (WeightTier t : tiers) n += t != WeightTier::kDevice;
    return n;
  }

  Result<std::unique_ptr<WeightStreamer>> make(int32_t depth, DiskFaultHook hook = nullptr) {
    WeightStreamerOptions o;
    o.prefetch_depth = depth;
    o.offload_dir = dir.path();
    o.extent_bytes = 4096;  // several extents per unit
    o.copy_threads = 2;
    o.fault_hook_for_testing = std::move(hook);
    std::vector<StreamedUnit> units(tiers.size());
    uint64_t arena_bytes = 0;
    for (size_t u = 0; u < tiers.size(); ++u) {
      if (tiers[u] == WeightTier::kDevice) arena_bytes += align_up(image_bytes(u), 64);
    }
    char* arena = static_cast<char*>(backend.allocate(arena_bytes).value());
    uint64_t arena_used = 0;
    for (size_t u = 0; u < tiers.size(); ++u) {
      const int id = static_cast<int>(u);
      StreamedUnit& su = units[u];
      su.tier = tiers[u];
      su.unit.name = "unit " + std::to_string(u);
      if (tiers[u] == WeightTier::kDevice) {
        su.unit = write_unit(id, arena + arena_used);
        arena_used += align_up(image_bytes(u), 64);
      } else if (in_place[u]) {
        // The file: 5000 bytes of junk, tensor 0, 12 bytes of junk, tensor 2.
        const fs::path file = dir.path() / ("unit" + std::to_string(u) + ".bin");
        std::vector<char> img(image_bytes(u));
        WeightUnit w = write_unit(id, img.data());
        const uint64_t a_off = 5000, b_off = a_off + w.tensors[0].nbytes() + 12;
        std::vector<char> bytes(b_off + w.tensors[2].nbytes(), 'x');
        std::memcpy(bytes.data() + a_off, w.tensors[0].data, w.tensors[0].nbytes());
        std::memcpy(bytes.data() + b_off, w.tensors[2].data, w.tensors[2].nbytes());
        std::ofstream(file, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
        o.files.push_back(file);
        const uint64_t begin = a_off / 4096 * 4096;
        const uint64_t end = align_up(bytes.size(), 4096);
        su.file_reads.push_back({static_cast<int32_t>(o.files.size() - 1), begin, end - begin, 0});
        su.unit = w;
        for (TensorView& t : su.unit.tensors) t.data = nullptr;
        su.slot_offsets = {static_cast<int64_t>(a_off - begin), kKeepView,
                           static_cast<int64_t>(b_off - begin)};
      } else {
        su.image_bytes = image_bytes(u);
        su.write_image = [id](char* dst) -> Result<WeightUnit> { return write_unit(id, dst); };
      }
    }
    return WeightStreamer::create(&backend, std::move(units), arena, arena_bytes, o);
  }
};

class WeightStreamerDepthTest : public ::testing::TestWithParam<int32_t> {};

TEST_P(WeightStreamerDepthTest, ServesByteIdenticalUnitsThroughTheRing) {
  const int32_t depth = GetParam();
  Fixture f;
  {
    auto s = f.make(depth);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    WeightStreamer& w = *s.value();
    const int n = f.num_streamed();
    EXPECT_EQ(w.num_slots(), std::min(depth + 1, n));
    EXPECT_EQ(w.in_flight(), std::min(depth, n));  // prefetched at creation
    const char* ring_lo = nullptr;
    std::set<const void*> slot_addresses;
    for (int step = 0; step < 3; ++step) {
      for (int u = 0; u < w.num_units(); ++u) {
        auto unit = w.acquire(u);
        ASSERT_TRUE(unit.is_ok()) << unit.status().to_string();
        expect_unit(u, *unit.value());
        if (w.tier(u) != WeightTier::kDevice) {
          // depth units ahead of this one (fewer when there are fewer streamed units).
          EXPECT_EQ(w.in_flight(), std::min(depth, n - 1)) << "unit " << u;
          const char* p = static_cast<const char*>(unit.value()->tensors[0].data);
          const char* slot = p - (f.in_place[static_cast<size_t>(u)] ? 904 : 0);
          slot_addresses.insert(slot);
          if (ring_lo == nullptr || slot < ring_lo) ring_lo = slot;
        }
        w.release(u);
      }
    }
    // Every streamed view lies in one of the ring's slots, and the slots are reused.
    EXPECT_EQ(slot_addresses.size(), static_cast<size_t>(w.num_slots()));
    for (const void* a : slot_addresses) {
      const uint64_t off = static_cast<uint64_t>(static_cast<const char*>(a) - ring_lo);
      EXPECT_EQ(off % w.slot_bytes(), 0u);
      EXPECT_LT(off, w.slot_bytes() * static_cast<uint64_t>(w.num_slots()));
    }
    const StreamStats& st = w.stats();
    EXPECT_EQ(st.acquires, 3 * w.num_units());
    EXPECT_EQ(st.streamed_acquires, 3 * n);
    EXPECT_EQ(st.restarts, 0);
    EXPECT_EQ(st.failures, 0);
    EXPECT_EQ(st.host_bytes, 3 * (align_up(image_bytes(1), 4096) + align_up(image_bytes(4), 4096)));
    EXPECT_GT(st.disk_bytes, 0u);
    EXPECT_GE(st.stall_seconds, 0.0);
    w.reset_stats();
    EXPECT_EQ(w.stats().acquires, 0);
    EXPECT_EQ(w.in_flight() + w.free_slots(), w.num_slots());
  }
  EXPECT_EQ(f.backend.live(), 0) << "device allocations leaked";
}

INSTANTIATE_TEST_SUITE_P(Depths, WeightStreamerDepthTest, ::testing::Values(1, 2, 3, 8));

TEST(WeightStreamerTest, OutOfOrderAcquireRestartsThePipeline) {
  Fixture f;
  auto s = f.make(2);
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  WeightStreamer& w = *s.value();
  for (int u : {4, 2, 5, 1, 3, 3, 0, 6, 5}) {
    auto unit = w.acquire(u);
    ASSERT_TRUE(unit.is_ok()) << unit.status().to_string();
    expect_unit(u, *unit.value());
    w.release(u);
  }
  EXPECT_GT(w.stats().restarts, 0);
  // Back in order, the pipeline continues from where the last restart left it.
  const int64_t restarts = w.stats().restarts;
  for (int u = 0; u < w.num_units(); ++u) {
    ASSERT_TRUE(w.acquire(u).is_ok());
    w.release(u);
  }
  EXPECT_LE(w.stats().restarts, restarts + 1);
}

TEST(WeightStreamerTest, HoldsSeveralStreamedUnitsAtOnceWithinTheRing) {
  Fixture f;
  auto s = f.make(2);
  ASSERT_TRUE(s.is_ok());
  WeightStreamer& w = *s.value();
  auto a = w.acquire(1);
  auto b = w.acquire(2);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  expect_unit(1, *a.value());
  expect_unit(2, *b.value());
  EXPECT_NE(a.value()->tensors[0].data, b.value()->tensors[0].data);
  w.release(1);
  w.release(2);
}

// On a GPU the compute that reads a slot is still queued when the unit is released: every copy
// that refills a slot waits first for the fence recorded at that release.
TEST(WeightStreamerTest, RefillsOfReleasedSlotsWaitForTheirComputeFence) {
  Fixture f;
  f.tiers = {WeightTier::kDevice, WeightTier::kHost, WeightTier::kHost,  WeightTier::kHost,
             WeightTier::kHost,   WeightTier::kHost, WeightTier::kDevice};
  f.in_place.assign(f.tiers.size(), false);
  auto s = f.make(1);
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  WeightStreamer& w = *s.value();
  for (int cycle = 0; cycle < 3; ++cycle) {
    for (int u = 0; u < w.num_units(); ++u) {
      auto unit = w.acquire(u);
      ASSERT_TRUE(unit.is_ok()) << unit.status().to_string();
      expect_unit(u, *unit.value());
      w.release(u);
    }
  }
  // One fence per release of a streamed unit; 5 streamed units over two slots, 3 cycles: every
  // fill but the first two of the ring reuses a released slot (copies split across 2 threads).
  EXPECT_EQ(f.backend.fences_recorded(), 15u);
  EXPECT_GE(f.backend.fence_waits(), 2u * (15u - 2u));
  EXPECT_GE(f.backend.fences_passed(), 13u);
}

// Where the device tier is not host memory, disk reads (in place and from one-time copies) land
// in pinned bounce buffers and copy threads carry them on to the slots, after the slot's fence; a
// failed read is never carried on.
TEST(WeightStreamerTest, DiskReadsGoThroughBounceBuffersOffTheHost) {
  Fixture f;
  f.backend.set_device(DeviceKind::kCuda);
  std::atomic<bool> armed{false};
  std::atomic<int> faults{0};
  auto s = f.make(2, [&](DiskOp op, int64_t, uint64_t) {
    // After start-up, the first read comes back corrupted: its checksum fails, it is read again,
    // and its bytes never reach the slot.
    if (armed.load() && op != DiskOp::kWrite && faults.fetch_add(1) == 0) {
      return DiskFault::kCorrupt;
    }
    return DiskFault::kNone;
  });
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  WeightStreamer& w = *s.value();
  armed.store(true);
  const int64_t copies_before = f.backend.copies();
  for (int cycle = 0; cycle < 2; ++cycle) {
    for (int u = 0; u < w.num_units(); ++u) {
      auto unit = w.acquire(u);
      ASSERT_TRUE(unit.is_ok()) << unit.status().to_string();
      expect_unit(u, *unit.value());
      w.release(u);
    }
  }
  EXPECT_GE(w.stats().retries, 1);
  // Every disk read of the two cycles was carried on by a copy: 3 disk units, several reads each.
  EXPECT_GE(f.backend.copies() - copies_before, 2 * 3);
  EXPECT_GT(w.stats().disk_bytes, 0u);
}

// A disk read that fails is returned by acquire, and its bytes are not used; the unit is read
// again next time. Covers an I/O error on a one-time copy, a checksum failure on one, and an
// I/O error and a checksum failure (against the CRC taken at start-up) on an in-place read.
TEST(WeightStreamerTest, FailedDiskReadIsReportedNeverUsed) {
  struct Case {
    DiskOp op;
    DiskFault fault;
    int unit;
    StatusCode code;
  };
  for (const Case& c : {Case{DiskOp::kRead, DiskFault::kEio, 2, StatusCode::kIoError},
                        Case{DiskOp::kRead, DiskFault::kCorrupt, 5, StatusCode::kDataLoss},
                        Case{DiskOp::kFileRead, DiskFault::kEio, 3, StatusCode::kIoError},
                        Case{DiskOp::kFileRead, DiskFault::kCorrupt, 3, StatusCode::kDataLoss}}) {
    Fixture f;
    auto fail = std::make_shared<std::atomic<bool>>(false);
    auto s = f.make(2, [fail, c](DiskOp op, int64_t, uint64_t) {
      return op == c.op && fail->load() ? c.fault : DiskFault::kNone;
    });
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    fail->store(true);
    WeightStreamer& w = *s.value();
    // Out of pipeline order (unit 1 is next): what create() prefetched before the fault was
    // armed is discarded, and the unit is read now, failing every attempt.
    auto bad = w.acquire(c.unit);
    ASSERT_FALSE(bad.is_ok());
    EXPECT_EQ(bad.status().code(), c.code) << bad.status().to_string();
    EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("unit " + std::to_string(c.unit)));
    EXPECT_GE(w.stats().failures, 1);
    fail->store(false);
    // A new step: everything, the failed unit included, comes back intact.
    for (int u = 0; u < w.num_units(); ++u) {
      auto r = w.acquire(u);
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      expect_unit(u, *r.value());
      w.release(u);
    }
  }
}

// A transient fault costs a retry, not the step: each kind of failed read once, then the same
// read again succeeds and the unit is intact.
TEST(WeightStreamerTest, TransientReadFaultIsReadAgain) {
  for (DiskFault fault : {DiskFault::kEio, DiskFault::kCorrupt, DiskFault::kShortRead}) {
    Fixture f;
    auto left = std::make_shared<std::atomic<int>>(0);  // faults still to inject
    auto s = f.make(2, [left, fault](DiskOp op, int64_t, uint64_t) {
      if (op == DiskOp::kWrite) return DiskFault::kNone;
      return left->fetch_sub(1) > 0 ? fault : DiskFault::kNone;
    });
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    left->store(1);
    WeightStreamer& w = *s.value();
    for (int u = 0; u < w.num_units(); ++u) {
      auto r = w.acquire(u);
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      expect_unit(u, *r.value());
      w.release(u);
    }
    EXPECT_EQ(w.stats().retries, 1) << "fault " << static_cast<int>(fault);
    EXPECT_EQ(w.stats().failures, 0);
  }
}

TEST(WeightStreamerTest, DiskUnitsNeedAnOffloadDirAndFailuresFreeEverything) {
  FakeBackend backend;
  {
    std::vector<StreamedUnit> units(1);
    units[0].tier = WeightTier::kDisk;
    units[0].unit.name = "layer 0";
    units[0].image_bytes = image_bytes(0);
    units[0].write_image = [](char* dst) -> Result<WeightUnit> { return write_unit(0, dst); };
    void* arena = backend.allocate(4096).value();
    auto s = WeightStreamer::create(&backend, std::move(units), arena, 4096, {});
    ASSERT_FALSE(s.is_ok());
    EXPECT_THAT(s.status().message(), ::testing::HasSubstr("--offload-dir"));
  }
  {
    std::vector<StreamedUnit> units(1);
    units[0].tier = WeightTier::kHost;
    units[0].image_bytes = image_bytes(0);
    units[0].write_image = [](char*) -> Result<WeightUnit> {
      return data_loss("checkpoint shard truncated");
    };
    auto s = WeightStreamer::create(&backend, std::move(units), nullptr, 0, {});
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.status().code(), StatusCode::kDataLoss);
  }
  EXPECT_EQ(backend.live(), 0) << "device allocations leaked on a failed create";
}

TEST(WeightStreamerTest, AllResidentNeedsNoRing) {
  Fixture f;
  f.tiers.assign(f.tiers.size(), WeightTier::kDevice);
  auto s = f.make(2);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s.value()->num_slots(), 0);
  for (int u = 0; u < s.value()->num_units(); ++u) {
    auto r = s.value()->acquire(u);
    ASSERT_TRUE(r.is_ok());
    expect_unit(u, *r.value());
    s.value()->release(u);
  }
  EXPECT_EQ(f.backend.copies(), 0);
}

TEST(WeightStreamerDeathTest, ReleasingAnUnacquiredUnitIsABug) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the transfer engine runs threads
  Fixture f;
  auto s = f.make(1);
  ASSERT_TRUE(s.is_ok());
  EXPECT_DEATH(s.value()->release(1), "released unacquired");
}

}  // namespace
}  // namespace tierserve

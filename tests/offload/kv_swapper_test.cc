// The KV tiers end to end on the CPU backend: HostPool, TransferEngine (copy threads and the
// io_uring I/O thread) and KvSwapper moving random blocks device -> host -> disk -> device
// (DESIGN.md §6 invariant 2), with leak checks (invariant 4), pinned in-flight writes
// (invariant 5), and injected disk faults reported instead of used.
#include "offload/kv_swapper.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "kernels/backend_registry.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

// A temporary directory for the disk tier, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string templ = ::testing::TempDir() + "kv_swapper_test_XXXXXX";
    TS_CHECK(mkdtemp(templ.data()) != nullptr) << "mkdtemp";
    path_ = templ;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A device pool of random blocks, a host tier of `host_blocks` and a disk tier of
// `disk_blocks`.
struct Tiers {
  Tiers(int32_t device_blocks, int32_t host_blocks, int32_t disk_blocks, const fs::path& dir) {
    backend = std::move(create_backend(BackendOptions{}).value());
    // 2 layers x (K, V) x 4 tokens x 3 heads x 20 dims x 4 bytes = 3840 bytes: not a multiple
    // of 4096, so extents carry a tail.
    view.layout = KvBlockLayout{2, 4, 3, 20, DType::kF32};
    view.num_blocks = device_blocks;
    device.resize(static_cast<size_t>(device_blocks) * view.layout.block_bytes());
    view.base = device.data();
    std::unique_ptr<DiskStore> disk;
    if (disk_blocks > 0) {
      DiskStoreOptions o;
      o.dir = dir;
      o.extent_bytes = 4096;
      o.capacity_bytes = static_cast<uint64_t>(disk_blocks) * o.extent_bytes;
      o.queue_depth = 4;
      disk = std::move(DiskStore::create(o).value());
      disk_store = disk.get();
    }
    transfers = std::move(TransferEngine::create(backend.get(), std::move(disk)).value());
    const uint64_t host_bytes =
        static_cast<uint64_t>(host_blocks) * view.layout.block_bytes() + 8 * 4096 + 4096;
    host = std::move(HostPool::create(host_bytes, backend.get(), &topology).value());
    KvSwapperOptions so;
    so.num_host_blocks = host_blocks;
    swapper = std::move(KvSwapper::create(view, host.get(), transfers.get(), so).value());
  }
  void randomize(int32_t block, uint32_t seed) {
    std::mt19937 rng(seed);
    char* p = static_cast<char*>(view.block_ptr(block));
    for (size_t i = 0; i < view.layout.block_bytes(); ++i) p[i] = static_cast<char>(rng());
  }
  std::vector<char> bytes(int32_t block) const {
    const char* p = static_cast<const char*>(view.block_ptr(block));
    return std::vector<char>(p, p + view.layout.block_bytes());
  }

  Topology topology;
  std::unique_ptr<Backend> backend;
  std::vector<char> device;
  KvCacheView view;
  DiskStore* disk_store = nullptr;  // owned by transfers
  std::unique_ptr<TransferEngine> transfers;
  std::unique_ptr<HostPool> host;
  std::unique_ptr<KvSwapper> swapper;
};

BlockHash hash_of_int(int i) {
  BlockHash h{};
  h[0] = static_cast<uint8_t>(i);
  h[1] = static_cast<uint8_t>(i >> 8);
  h[31] = 0x5A;
  return h;
}

// One-sequence steps through KvSwapper::move.
Result<std::vector<SwapSlot>> swap_out(Tiers& t, std::span<const int32_t> blocks) {
  KvStepMoves m;
  m.swap_outs.push_back(blocks);
  return std::move(t.swapper->move(m).swap_outs[0]);
}
Status swap_in(Tiers& t, std::span<SwapSlot> slots, std::span<const int32_t> blocks) {
  KvStepMoves m;
  m.swap_ins.push_back({slots, blocks});
  return std::move(t.swapper->move(m).swap_ins[0]);
}
void spill(Tiers& t, int32_t block, const BlockHash& hash) {
  KvStepMoves m;
  m.spills.push_back({block, hash});
  t.swapper->move(m);
}
Status restore(Tiers& t, std::span<const BlockHash> hashes, std::span<const int32_t> blocks) {
  KvStepMoves m;
  m.restores.push_back({hashes, blocks});
  return std::move(t.swapper->move(m).restores[0]);
}

TEST(KvSwapperTest, BlocksRoundTripThroughHostAndDiskByteIdentical) {
  TempDir dir;
  Tiers t(16, 3, 20, dir.path());
  EXPECT_EQ(t.swapper->num_free_swap_blocks(), 23);
  std::mt19937 rng(7);
  for (int round = 0; round < 5; ++round) {
    // 8 blocks out: 3 land in host slots, 5 on disk.
    std::vector<int32_t> blocks = {3, 0, 15, 7, 8, 1, 12, 5};
    std::vector<std::vector<char>> before;
    for (int32_t b : blocks) {
      t.randomize(b, static_cast<uint32_t>(rng()));
      before.push_back(t.bytes(b));
    }
    auto slots = swap_out(t, blocks);
    ASSERT_TRUE(slots.is_ok()) << slots.status().to_string();
    EXPECT_FALSE(slots.value()[0].on_disk);
    EXPECT_TRUE(slots.value()[7].on_disk);
    EXPECT_EQ(t.swapper->num_used_host_blocks(), 3);
    EXPECT_EQ(t.swapper->num_used_disk_blocks(), 5);
    // The device blocks are free to reuse at once: overwrite them.
    for (int32_t b : blocks) t.randomize(b, 99);
    // Back into other blocks, in another order of placement.
    std::vector<int32_t> targets = {10, 11, 2, 4, 6, 9, 13, 14};
    ASSERT_TRUE(swap_in(t, slots.value(), targets).is_ok());
    for (size_t i = 0; i < blocks.size(); ++i) {
      EXPECT_EQ(t.bytes(targets[i]), before[i]) << "block " << i << " round " << round;
    }
    EXPECT_EQ(t.swapper->num_used_host_blocks(), 0);
    EXPECT_EQ(t.swapper->num_used_disk_blocks(), 0);
    t.swapper->drain();
    EXPECT_EQ(t.transfers->num_free_extents(), 20);
  }
  EXPECT_EQ(t.swapper->stats().blocks_out, 40);
  EXPECT_EQ(t.swapper->stats().disk_blocks_in, 25);
  EXPECT_EQ(t.transfers->pending(), 0);
}

// One step's moves go together (DESIGN.md §2): two sequences swapped out, a prefix block
// spilled, a third sequence swapped in and a prefix restored, all in one move() call, with
// more disk blocks than staging buffers (8) so that they go in batches, and each batch's disk
// operations in flight together.
TEST(KvSwapperTest, OneStepsMovesAreBatched) {
  TempDir dir;
  Tiers t(40, 2, 30, dir.path());
  // Delay the first disk completion, so that the I/O thread finds the rest of its batch queued.
  std::atomic<int> completions{0};
  t.disk_store->set_fault_hook_for_testing([&](DiskOp, int64_t, uint64_t) {
    if (completions.fetch_add(1) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return DiskFault::kNone;
  });
  std::mt19937 rng(11);
  auto fill = [&](std::vector<int32_t> blocks) {
    std::vector<std::vector<char>> out;
    for (int32_t b : blocks) {
      t.randomize(b, static_cast<uint32_t>(rng()));
      out.push_back(t.bytes(b));
    }
    return out;
  };
  // Step 1: sequence C (10 blocks) out alone, and a prefix block spilled.
  std::vector<int32_t> c_blocks = {20, 21, 22, 23, 24, 25, 26, 27, 28, 29};
  const auto c_content = fill(c_blocks);
  const auto p_content = fill({30});
  KvStepMoves step1;
  step1.swap_outs.push_back(c_blocks);
  step1.spills.push_back({30, hash_of_int(77)});
  KvStepResult r1 = t.swapper->move(step1);
  ASSERT_TRUE(r1.swap_outs[0].is_ok());
  std::vector<SwapSlot> c_slots = std::move(r1.swap_outs[0].value());
  t.swapper->drain();
  ASSERT_TRUE(t.swapper->has_prefix_block(hash_of_int(77)));

  // Step 2: A (9 blocks) and B (3 blocks) out, C back in, the prefix block restored.
  std::vector<int32_t> a_blocks = {0, 1, 2, 3, 4, 5, 6, 7, 8}, b_blocks = {9, 10, 11};
  const auto a_content = fill(a_blocks);
  const auto b_content = fill(b_blocks);
  std::vector<int32_t> c_targets = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};  // A's and B's blocks
  std::vector<int32_t> p_target = {12};
  std::vector<BlockHash> p_hash = {hash_of_int(77)};
  KvStepMoves step2;
  step2.swap_outs.push_back(a_blocks);
  step2.swap_outs.push_back(b_blocks);
  step2.swap_ins.push_back({c_slots, c_targets});
  step2.restores.push_back({p_hash, p_target});
  KvStepResult r2 = t.swapper->move(step2);
  ASSERT_TRUE(r2.swap_outs[0].is_ok() && r2.swap_outs[1].is_ok());
  ASSERT_TRUE(r2.swap_ins[0].is_ok()) << r2.swap_ins[0].to_string();
  ASSERT_TRUE(r2.restores[0].is_ok()) << r2.restores[0].to_string();
  // C came back over A's and B's blocks, which were read out first.
  for (size_t i = 0; i < c_targets.size(); ++i) EXPECT_EQ(t.bytes(c_targets[i]), c_content[i]);
  EXPECT_EQ(t.bytes(12), p_content[0]);
  EXPECT_GE(t.transfers->stats().max_disk_in_flight, 2);

  // Step 3: A and B back.
  std::vector<SwapSlot> a_slots = std::move(r2.swap_outs[0].value());
  std::vector<SwapSlot> b_slots = std::move(r2.swap_outs[1].value());
  std::vector<int32_t> a_targets = {31, 32, 33, 34, 35, 36, 37, 38, 39};
  std::vector<int32_t> b_targets = {13, 14, 15};
  KvStepMoves step3;
  step3.swap_ins.push_back({a_slots, a_targets});
  step3.swap_ins.push_back({b_slots, b_targets});
  KvStepResult r3 = t.swapper->move(step3);
  ASSERT_TRUE(r3.swap_ins[0].is_ok() && r3.swap_ins[1].is_ok());
  for (size_t i = 0; i < a_targets.size(); ++i) EXPECT_EQ(t.bytes(a_targets[i]), a_content[i]);
  for (size_t i = 0; i < b_targets.size(); ++i) EXPECT_EQ(t.bytes(b_targets[i]), b_content[i]);
  t.swapper->drain();
  EXPECT_EQ(t.swapper->num_used_host_blocks(), 0);
  EXPECT_EQ(t.swapper->num_used_disk_blocks(), 0);
  EXPECT_EQ(t.transfers->pending(), 0);
}

TEST(KvSwapperTest, HostOnlyTierAndFullSpace) {
  Tiers t(8, 4, 0, "");
  EXPECT_EQ(t.swapper->num_free_swap_blocks(), 4);
  std::vector<int32_t> five = {0, 1, 2, 3, 4};
  EXPECT_FALSE(swap_out(t, five).is_ok());  // no room: nothing placed
  EXPECT_EQ(t.swapper->num_used_host_blocks(), 0);
  t.randomize(2, 5);
  const std::vector<char> b2 = t.bytes(2);
  std::vector<int32_t> one = {2};
  auto slots = swap_out(t, one);
  ASSERT_TRUE(slots.is_ok());
  // Released without reading (an aborted sequence): the slot is free again.
  t.swapper->release(slots.value());
  EXPECT_EQ(t.swapper->num_used_host_blocks(), 0);
  slots = swap_out(t, one);
  ASSERT_TRUE(slots.is_ok());
  std::vector<int32_t> dst = {6};
  ASSERT_TRUE(swap_in(t, slots.value(), dst).is_ok());
  EXPECT_EQ(t.bytes(6), b2);
}

// A block whose disk write is in flight is pinned: releasing it does not free its extent until
// the write has completed, so the extent cannot be reused under the write.
TEST(KvSwapperTest, ReleasedBlockStaysPinnedUntilItsWriteCompletes) {
  TempDir dir;
  Tiers t(4, 0, 2, dir.path());
  // Hold every write until the test lets it complete.
  std::atomic<bool> hold{true};
  t.disk_store->set_fault_hook_for_testing([&](DiskOp, int64_t, uint64_t) {
    while (hold.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return DiskFault::kNone;
  });
  std::vector<int32_t> one = {1};
  auto slots = swap_out(t, one);
  ASSERT_TRUE(slots.is_ok());
  ASSERT_TRUE(slots.value()[0].on_disk);
  EXPECT_EQ(t.transfers->num_free_extents(), 1);
  t.swapper->release(slots.value());
  EXPECT_EQ(t.swapper->num_used_disk_blocks(), 0);
  EXPECT_EQ(t.transfers->num_free_extents(), 1);  // pinned: its write is still in flight
  hold = false;
  t.swapper->drain();
  EXPECT_EQ(t.transfers->num_free_extents(), 2);
  // Both extents work afterwards.
  t.randomize(2, 3);
  t.randomize(3, 4);
  const std::vector<char> b2 = t.bytes(2), b3 = t.bytes(3);
  std::vector<int32_t> two = {2, 3};
  auto s2 = swap_out(t, two);
  ASSERT_TRUE(s2.is_ok()) << s2.status().to_string();
  std::vector<int32_t> dst = {0, 1};
  ASSERT_TRUE(swap_in(t, s2.value(), dst).is_ok());
  EXPECT_EQ(t.bytes(0), b2);
  EXPECT_EQ(t.bytes(1), b3);
}

// Evicted prefix blocks go down (host slots, then disk extents), are visible once stored, and
// come back byte-identical; the least recently used is replaced when the tiers are full, and
// swapped sequences reclaim prefix entries, but never pinned ones.
TEST(KvSwapperTest, PrefixBlocksSpillAndRestoreByteIdentical) {
  TempDir dir;
  Tiers t(8, 2, 2, dir.path());
  std::vector<std::vector<char>> content;
  for (int i = 0; i < 4; ++i) {
    t.randomize(i, 100 + static_cast<uint32_t>(i));
    content.push_back(t.bytes(i));
    spill(t, i, hash_of_int(i));
  }
  EXPECT_EQ(t.swapper->num_prefix_blocks(), 4);     // 2 on host, 2 on disk
  EXPECT_EQ(t.swapper->num_free_swap_blocks(), 4);  // all reclaimable
  t.swapper->drain();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(t.swapper->has_prefix_block(hash_of_int(i)));
  EXPECT_FALSE(t.swapper->has_prefix_block(hash_of_int(9)));
  // Restore into other blocks (the entries stay).
  std::vector<BlockHash> hashes = {hash_of_int(3), hash_of_int(0), hash_of_int(2)};
  std::vector<int32_t> dst = {5, 6, 7};
  ASSERT_TRUE(restore(t, hashes, dst).is_ok());
  EXPECT_EQ(t.bytes(5), content[3]);
  EXPECT_EQ(t.bytes(6), content[0]);
  EXPECT_EQ(t.bytes(7), content[2]);
  EXPECT_EQ(t.swapper->num_prefix_blocks(), 4);
  // A fifth spill replaces the least recently used entry: block 1 (never restored).
  t.randomize(4, 104);
  spill(t, 4, hash_of_int(4));
  EXPECT_FALSE(t.swapper->has_prefix_block(hash_of_int(1)));
  EXPECT_EQ(t.swapper->num_prefix_blocks(), 4);
  // Entries restored in a step are pinned while its swap-outs make room: a swap-out of 3
  // blocks next to 2 restores finds room for 2 only.
  std::vector<BlockHash> pinned = {hash_of_int(0), hash_of_int(3)};
  std::vector<int32_t> restored_to = {1, 2};
  std::vector<int32_t> three = {5, 6, 7}, two_blocks = {5, 6};
  KvStepMoves m;
  m.restores.push_back({pinned, restored_to});
  m.swap_outs.push_back(three);
  KvStepResult r = t.swapper->move(m);
  EXPECT_FALSE(r.swap_outs[0].is_ok());
  EXPECT_TRUE(r.restores[0].is_ok());
  m.swap_outs[0] = two_blocks;
  r = t.swapper->move(m);
  ASSERT_TRUE(r.swap_outs[0].is_ok());
  ASSERT_TRUE(r.restores[0].is_ok());
  auto two = std::move(r.swap_outs[0]);
  EXPECT_TRUE(t.swapper->has_prefix_block(hash_of_int(0)));
  EXPECT_TRUE(t.swapper->has_prefix_block(hash_of_int(3)));
  EXPECT_EQ(t.swapper->num_prefix_blocks(), 2);
  EXPECT_EQ(t.bytes(1), content[0]);
  EXPECT_EQ(t.bytes(2), content[3]);
  t.swapper->release(two.value());
}

// A prefix block on disk is visible only once its write has completed (invariant 5), and one
// whose write failed never is.
TEST(KvSwapperTest, DiskPrefixBlockVisibleOnlyAfterItsWriteCompletes) {
  TempDir dir;
  Tiers t(4, 0, 2, dir.path());
  std::atomic<bool> hold{true};
  std::atomic<int> writes{0};
  t.disk_store->set_fault_hook_for_testing([&](DiskOp op, int64_t, uint64_t) {
    if (op != DiskOp::kWrite) return DiskFault::kNone;
    while (hold.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return writes.fetch_add(1) == 1 ? DiskFault::kEio : DiskFault::kNone;
  });
  t.randomize(0, 1);
  spill(t, 0, hash_of_int(0));
  EXPECT_FALSE(t.swapper->has_prefix_block(hash_of_int(0)));  // held in flight
  hold = false;
  t.swapper->drain();
  EXPECT_TRUE(t.swapper->has_prefix_block(hash_of_int(0)));
  spill(t, 1, hash_of_int(1));  // this write fails
  // Completed with an error but not yet reaped: still no hit.
  while (writes.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(t.swapper->has_prefix_block(hash_of_int(1)));
  t.swapper->drain();
  EXPECT_FALSE(t.swapper->has_prefix_block(hash_of_int(1)));
}

struct FaultCase {
  DiskFault fault;
  DiskOp op;
  const char* expect;  // in the error message
};

// Each disk fault makes swap_in fail with a clear error (the caller recomputes); the tiers are
// still consistent afterwards and later swaps work.
TEST(KvSwapperTest, DiskFaultsAreReportedNeverUsed) {
  const FaultCase cases[] = {{DiskFault::kEio, DiskOp::kRead, ""},
                             {DiskFault::kCorrupt, DiskOp::kRead, "checksum"},
                             {DiskFault::kShortRead, DiskOp::kRead, "short"},
                             {DiskFault::kEnospc, DiskOp::kWrite, ""},
                             {DiskFault::kEio, DiskOp::kWrite, ""}};
  for (const FaultCase& c : cases) {
    TempDir dir;
    Tiers t(6, 0, 4, dir.path());
    bool armed = true;
    t.disk_store->set_fault_hook_for_testing([&](DiskOp op, int64_t, uint64_t) {
      if (armed && op == c.op) {
        armed = false;
        return c.fault;
      }
      return DiskFault::kNone;
    });
    std::vector<int32_t> blocks = {0, 1};
    t.randomize(0, 1);
    t.randomize(1, 2);
    const std::vector<char> b1 = t.bytes(1);
    auto slots = swap_out(t, blocks);
    ASSERT_TRUE(slots.is_ok());
    std::vector<int32_t> dst = {2, 3};
    Status s = swap_in(t, slots.value(), dst);
    EXPECT_FALSE(s.is_ok()) << "fault " << static_cast<int>(c.fault);
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s.to_string();
    EXPECT_EQ(t.swapper->stats().failures, 1);
    EXPECT_EQ(t.swapper->num_used_disk_blocks(), 0);
    // Still works afterwards.
    std::vector<int32_t> one = {1};
    auto again = swap_out(t, one);
    ASSERT_TRUE(again.is_ok());
    std::vector<int32_t> d5 = {5};
    ASSERT_TRUE(swap_in(t, again.value(), d5).is_ok());
    EXPECT_EQ(t.bytes(5), b1);
    t.swapper->drain();
    EXPECT_EQ(t.transfers->num_free_extents(), 4);
  }
}

TEST(HostPoolTest, CarvesAlignedRegionsAndRefusesOverflow) {
  Topology topology;
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok());
  auto pool = HostPool::create(1 << 20, backend.value().get(), &topology);
  ASSERT_TRUE(pool.is_ok()) << pool.status().to_string();
  HostPool& p = *pool.value();
  EXPECT_NE(p.pinning(), HostPool::Pinning::kBackend);  // the CPU backend has no pinned kind
  auto a = p.carve(100, 64, "a");
  ASSERT_TRUE(a.is_ok());
  auto b = p.carve(4096, 4096, "b");
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.value()) % 4096, 0u);
  std::memset(b.value(), 1, 4096);
  auto c = p.carve(2 << 20, 64, "too much");
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("too much"), std::string::npos);
}

TEST(TransferEngineTest, ManyCopiesCompleteAndReportStatus) {
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok());
  TransferEngineOptions o;
  o.copy_threads = 3;
  auto engine = TransferEngine::create(backend.value().get(), nullptr, o);
  ASSERT_TRUE(engine.is_ok());
  TransferEngine& te = *engine.value();
  EXPECT_FALSE(te.has_disk());
  EXPECT_FALSE(te.allocate_extent().is_ok());
  std::vector<std::vector<int>> src(64, std::vector<int>(1000)), dst(64, std::vector<int>(1000));
  std::vector<TransferTicket> tickets;
  for (size_t i = 0; i < src.size(); ++i) {
    for (size_t j = 0; j < 1000; ++j) src[i][j] = static_cast<int>(i * 1000 + j);
    tickets.push_back(te.copy(dst[i].data(), src[i].data(), 1000 * sizeof(int)));
  }
  EXPECT_TRUE(te.wait_all(tickets).is_ok());
  EXPECT_EQ(dst, src);
  EXPECT_EQ(te.pending(), 0);
  EXPECT_EQ(te.stats().copies, 64u);
  TransferEngineOptions bad;
  bad.copy_threads = 0;
  EXPECT_FALSE(TransferEngine::create(backend.value().get(), nullptr, bad).is_ok());
}

}  // namespace
}  // namespace tierserve

// Preemption by swapping, end to end (DESIGN.md §6 invariants 1, 2, 4, 5): in --deterministic
// mode, with a device KV pool so small that sequences are swapped out to the host tier and the
// disk tier behind it and back in many times, every request's greedy output is exactly what it
// produces alone; every tier is empty once all requests end; disk faults (I/O errors, checksum
// mismatches, short reads, disk full) make the affected sequence recompute, never produce
// different tokens, and spare the others.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <random>

#include "engine/llm_engine.h"
#include "tests/engine/batching_util.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using testing::Case;
using testing::deterministic_options;
using testing::greedy;
using testing::make_cases;
using testing::open;
using testing::run_alone;
using testing::run_together;

constexpr const char* kModel = "llama_gqa_bf16";

class TempDir {
 public:
  TempDir() {
    std::string templ = ::testing::TempDir() + "kv_swap_test_XXXXXX";
    TS_CHECK(mkdtemp(templ.data()) != nullptr) << "mkdtemp";
    path_ = templ;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

class KvSwapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto probe = open(kModel, deterministic_options());
    ASSERT_NE(probe, nullptr);
    block_bytes_ = probe->kv_sizing().bytes / probe->kv_sizing().num_blocks;
    cases_ = make_cases(probe->config().vocab_size, 11, 24);
    alone_ = run_alone(kModel, cases_);
    ASSERT_EQ(alone_.size(), cases_.size());
  }

  // A device pool of 12 blocks (the longest request, barely) and the given lower tiers.
  EngineOptions small_pool(int32_t host_blocks, int32_t disk_blocks) const {
    EngineOptions o = deterministic_options();
    o.max_num_batched_tokens = 64;
    o.max_model_len = 192;
    o.kv_cache_memory_bytes = 12 * block_bytes_;
    o.kv_offloading_size_gb = static_cast<double>(host_blocks * block_bytes_) / (1ull << 30);
    if (disk_blocks > 0) {
      const uint64_t extent = (block_bytes_ + 4095) / 4096 * 4096;
      o.kv_disk_offload_gb = static_cast<double>(disk_blocks * extent) / (1ull << 30);
      o.offload_dir = dir_.path();
    }
    return o;
  }

  void expect_exact(const std::vector<std::vector<int32_t>>& together, const char* what) {
    ASSERT_EQ(together.size(), alone_.size());
    for (size_t i = 0; i < alone_.size(); ++i) {
      EXPECT_EQ(together[i], alone_[i]) << "request " << i << ", " << what;
    }
  }

  // Invariant 4: nothing left in any tier.
  void expect_empty(LlmEngine& engine) {
    EXPECT_EQ(engine.kv_cache().num_used_blocks(), 0) << "device blocks leaked";
    const KvTierUsage u = engine.kv_tier_usage();
    EXPECT_EQ(u.host_used, 0) << "host slots leaked";
    EXPECT_EQ(u.disk_used, 0) << "disk extents leaked";
  }

  TempDir dir_;
  uint64_t block_bytes_ = 0;
  std::vector<Case> cases_;
  std::vector<std::vector<int32_t>> alone_;
};

TEST_F(KvSwapTest, SwappingToHostKeepsOutputsExact) {
  for (bool prefix_caching : {true, false}) {
    EngineOptions o = small_pool(64, 0);
    o.enable_prefix_caching = prefix_caching;
    auto engine = open(kModel, o);
    ASSERT_NE(engine, nullptr);
    expect_exact(run_together(*engine, cases_), prefix_caching ? "prefix on" : "prefix off");
    const KvTierUsage u = engine->kv_tier_usage();
    EXPECT_GT(u.swaps.blocks_out, 20) << "the host tier was used";
    EXPECT_EQ(u.swaps.disk_blocks_out, 0);
    EXPECT_EQ(engine->stats().swap_failures, 0);
    expect_empty(*engine);
  }
}

TEST_F(KvSwapTest, SwappingThroughHostAndDiskKeepsOutputsExact) {
  for (bool prefix_caching : {true, false}) {
    EngineOptions o = small_pool(3, 64);
    o.enable_prefix_caching = prefix_caching;
    auto engine = open(kModel, o);
    ASSERT_NE(engine, nullptr);
    expect_exact(run_together(*engine, cases_), prefix_caching ? "prefix on" : "prefix off");
    const KvTierUsage u = engine->kv_tier_usage();
    EXPECT_GT(u.swaps.disk_blocks_out, 10) << "the disk tier was used";
    EXPECT_GT(u.swaps.disk_blocks_in, 0);
    EXPECT_EQ(engine->stats().swap_failures, 0);
    // The traffic the metrics report: every leg of a disk swap, in whole blocks or extents.
    const EngineLoad l = engine->load();
    EXPECT_GE(l.bytes_device_to_host, u.swaps.blocks_out * block_bytes_);
    EXPECT_GE(l.bytes_host_to_device, u.swaps.blocks_in * block_bytes_);
    EXPECT_GE(l.bytes_host_to_disk, u.swaps.disk_blocks_out * block_bytes_);
    EXPECT_GE(l.bytes_disk_to_host, u.swaps.disk_blocks_in * block_bytes_);
    EXPECT_EQ(l.bytes_disk_to_device, 0u) << "no streamed weights";
    EXPECT_EQ(l.preemptions, engine->stats().preemptions);
    expect_empty(*engine);
  }
}

// Too little swap space for some victims: those are recomputed, the rest swapped.
TEST_F(KvSwapTest, SwapSpaceTooSmallFallsBackToRecompute) {
  auto engine = open(kModel, small_pool(2, 0));
  ASSERT_NE(engine, nullptr);
  expect_exact(run_together(*engine, cases_), "2-block host tier");
  EXPECT_GT(engine->kv_tier_usage().swaps.blocks_out, 0);
  expect_empty(*engine);
}

// Each disk fault on some operations of the KV disk tier: the sequences affected recompute,
// outputs stay exact, the tiers end empty.
TEST_F(KvSwapTest, DiskFaultsMakeSequencesRecomputeNeverDiffer) {
  const DiskFault faults[] = {DiskFault::kEio, DiskFault::kCorrupt, DiskFault::kShortRead,
                              DiskFault::kEnospc};
  for (DiskFault fault : faults) {
    EngineOptions o = small_pool(2, 64);
    std::atomic<int> ops{0};
    o.kv_disk_fault_hook_for_testing = [&](DiskOp op, int64_t, uint64_t) {
      const bool write_fault = fault == DiskFault::kEnospc;
      if ((op == DiskOp::kWrite) != write_fault) return DiskFault::kNone;
      return ops.fetch_add(1) % 3 == 0 ? fault : DiskFault::kNone;
    };
    auto engine = open(kModel, o);
    ASSERT_NE(engine, nullptr);
    expect_exact(run_together(*engine, cases_), "with disk faults");
    EXPECT_GT(engine->stats().swap_failures, 0) << "fault " << static_cast<int>(fault);
    expect_empty(*engine);
  }
}

// A prefix evicted from the device goes down to the host (or disk) tier and comes back on a
// later hit: the second request with that prefix restores its blocks instead of recomputing
// them, and its output is exact.
TEST_F(KvSwapTest, EvictedPrefixIsRestoredFromLowerTiers) {
  std::mt19937 rng(5);
  auto tokens = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % 200) + 10;
    return t;
  };
  const std::vector<int32_t> prefix = tokens(64);  // 4 full blocks
  std::vector<int32_t> a = prefix, b = prefix;
  for (int32_t t : tokens(8)) a.push_back(t);
  for (int32_t t : tokens(9)) b.push_back(t);
  std::vector<std::vector<int32_t>> fillers;
  fillers.push_back(tokens(180));  // with its output, all 12 blocks of the pool
  auto expect_b = run_alone(kModel, {Case{b, 6}});
  ASSERT_EQ(expect_b.size(), 1u);
  for (int disk_blocks : {0, 32}) {
    EngineOptions o = small_pool(disk_blocks > 0 ? 1 : 16, disk_blocks);
    auto engine = open(kModel, o);
    ASSERT_NE(engine, nullptr);
    ASSERT_TRUE(engine->generate(a, greedy(4)).is_ok());
    // The filler takes the whole pool: the prefix's blocks are evicted and spilled.
    for (const auto& f : fillers) ASSERT_TRUE(engine->generate(f, greedy(2)).is_ok());
    EXPECT_GE(engine->kv_tier_usage().swaps.prefix_spilled, 4);
    auto r = engine->generate(b, greedy(6));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r.value().token_ids, expect_b[0]) << "disk blocks " << disk_blocks;
    EXPECT_EQ(r.value().num_cached_tokens, 64) << "the prefix came from a lower tier";
    const KvTierUsage u = engine->kv_tier_usage();
    EXPECT_GE(u.swaps.prefix_restored, 4);
    EXPECT_GT(u.prefix_blocks, 0);  // cached entries may stay; nothing else
    expect_empty(*engine);
  }
}

// Invariant 1 across every tier at once, through the scheduler: about a third of the weights
// streamed from the host tier and a third from disk, while KV blocks swap through host and disk.
TEST_F(KvSwapTest, StreamedWeightsAndSwappedKvKeepOutputsExact) {
  auto probe = open(kModel, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const double third_gib = static_cast<double>(probe->weight_bytes()) / 3 / (1ull << 30);
  probe.reset();
  EngineOptions o = small_pool(3, 64);
  o.cpu_offload_gb = third_gib;
  o.disk_offload_gb = third_gib;
  o.offload_dir = dir_.path();
  auto engine = open(kModel, o);
  ASSERT_NE(engine, nullptr);
  expect_exact(run_together(*engine, cases_), "streamed weights, swapped KV");
  const EngineLoad l = engine->load();
  EXPECT_GT(l.bytes_host_to_device, 0u) << "host-streamed weights";
  EXPECT_GT(l.bytes_disk_to_device, 0u) << "disk-streamed weights";
  EXPECT_GT(l.bytes_host_to_disk, 0u) << "KV swapped to disk";
  EXPECT_EQ(engine->stats().swap_failures, 0);
  expect_empty(*engine);
}

// Faults on disk-streamed weights: a transient one is read again and costs nothing else
// (outputs exact); a persistent one fails the requests of the step it hits, each with an
// error naming the layer and the tier, and the engine carries on once the disk heals.
TEST_F(KvSwapTest, DiskWeightFaultsAreReadAgainOrFailOnlyThatStep) {
  auto probe = open(kModel, deterministic_options());
  ASSERT_NE(probe, nullptr);
  const double half_gib = static_cast<double>(probe->weight_bytes()) / 2 / (1ull << 30);
  probe.reset();
  std::atomic<int> reads{0};
  std::atomic<bool> armed{false}, broken{false};
  EngineOptions o = deterministic_options();
  o.cpu_offload_gb = 0.0;
  o.disk_offload_gb = half_gib;
  o.offload_dir = dir_.path();
  o.weight_disk_fault_hook_for_testing = [&](DiskOp op, int64_t, uint64_t) {
    if (op == DiskOp::kWrite || !armed.load()) return DiskFault::kNone;  // start-up reads
    if (broken.load()) return DiskFault::kEio;
    // Every 7th read fails once; its retry is another read, which succeeds.
    return reads.fetch_add(1) % 7 == 3 ? DiskFault::kCorrupt : DiskFault::kNone;
  };
  auto engine = open(kModel, o);
  ASSERT_NE(engine, nullptr);
  armed = true;
  expect_exact(run_together(*engine, cases_), "transient weight read faults");
  EXPECT_GT(reads.load(), 7) << "weights were read from disk";

  broken = true;
  auto stream = engine->add_request(cases_[0].prompt, greedy(8)).value();
  while (engine->step()) {
  }
  std::optional<RequestOutput> last;
  while (auto out = stream->poll()) last = std::move(out);
  ASSERT_TRUE(last.has_value() && last->finished);
  EXPECT_EQ(last->finish_reason, "error");
  EXPECT_NE(last->error.message().find("streaming the weights of"), std::string::npos)
      << last->error.to_string();
  EXPECT_NE(last->error.message().find("disk"), std::string::npos) << last->error.to_string();

  broken = false;
  expect_exact(run_together(*engine, cases_), "after the disk healed");
  expect_empty(*engine);
}

// Aborting requests while some are swapped out frees their slots.
TEST_F(KvSwapTest, AbortWhileSwappedFreesEveryTier) {
  auto engine = open(kModel, small_pool(3, 64));
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases_) streams.push_back(engine->add_request(c.prompt, greedy(32)).value());
  bool aborted = false;
  while (engine->step()) {
    const KvTierUsage u = engine->kv_tier_usage();
    if (!aborted && u.host_used + u.disk_used > 0) {
      for (size_t i = 0; i < streams.size(); i += 2) engine->abort(streams[i]->request_id());
      aborted = true;
    }
  }
  EXPECT_TRUE(aborted) << "something was swapped out";
  for (size_t i = 0; i < streams.size(); ++i) {
    bool finished = false;
    while (auto out = streams[i]->poll()) finished = finished || out->finished;
    EXPECT_TRUE(finished) << "request " << i;
  }
  expect_empty(*engine);
}

TEST(KvSwapOptionsTest, DiskTierNeedsAnOffloadDir) {
  EngineOptions o = deterministic_options();
  o.kv_disk_offload_gb = 1;
  auto engine = LlmEngine::create(testing::model_path(kModel), o);
  ASSERT_FALSE(engine.is_ok());
  EXPECT_NE(engine.status().message().find("--offload-dir"), std::string::npos);
  o.offload_dir = "/nonexistent/tierserve-offload";
  engine = LlmEngine::create(testing::model_path(kModel), o);
  ASSERT_FALSE(engine.is_ok());
  EXPECT_NE(engine.status().message().find("/nonexistent/tierserve-offload"), std::string::npos)
      << engine.status().to_string();
}

}  // namespace
}  // namespace tierserve

#include "offload/planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/units.h"

namespace tierserve {
namespace {

using ::testing::HasSubstr;

// A model of 8 equal layers (10 MiB), a 20 MiB embedding (never streamed) and a 20 MiB head,
// with 5 MiB of activations and 5 MiB of KV for one request.
PlannerInputs model(uint64_t budget) {
  PlannerInputs in;
  in.units.push_back({"embedding", 20 * kMiB, 20 * kMiB, 20 * kMiB, false});
  for (int l = 0; l < 8; ++l) {
    in.units.push_back({"layer " + std::to_string(l), 10 * kMiB, 10 * kMiB, 10 * kMiB, true});
  }
  in.units.push_back({"head", 20 * kMiB, 20 * kMiB, 20 * kMiB, true, true});
  in.device_budget = budget;
  in.device_reserved = 5 * kMiB;
  in.min_kv_bytes = 5 * kMiB;
  in.host_limit = 1000 * kMiB;
  in.device_flag = "--device-memory-gb";
  return in;
}

std::vector<int> units_in(const Placement& p, WeightTier t) {
  std::vector<int> out;
  for (size_t u = 0; u < p.tiers.size(); ++u) {
    if (p.tiers[u] == t) out.push_back(static_cast<int>(u));
  }
  return out;
}

// The placement's own device use stays within the budget it was given.
void expect_within_budget(const PlannerInputs& in, const Placement& p) {
  EXPECT_LE(p.device_bytes + p.staging_bytes + in.device_reserved + in.min_kv_bytes,
            in.device_budget);
}

TEST(PlannerTest, EverythingFitsStaysResident) {
  const PlannerInputs in = model(200 * kMiB);
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(units_in(*p, WeightTier::kDevice).size(), 10u);
  EXPECT_EQ(p->num_streamed(), 0);
  EXPECT_EQ(p->device_bytes, 120 * kMiB);
  EXPECT_EQ(p->host_bytes, 0u);
  EXPECT_EQ(p->staging_bytes, 0u);
  EXPECT_FALSE(p->automatic);
  EXPECT_THAT(p->report(), HasSubstr("device: embedding, layers 0-7, head"));
}

TEST(PlannerTest, ExplicitCpuOffloadForcesBytesToHostEvenWhenAllFits) {
  PlannerInputs in = model(200 * kMiB);
  in.cpu_offload_bytes = 25 * kMiB;  // three whole layers reach it
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  // Spread evenly over the 8 layers (units 1..8): layers 2, 5, 7.
  EXPECT_EQ(units_in(*p, WeightTier::kHost), (std::vector<int>{3, 6, 8}));
  EXPECT_EQ(p->host_bytes, 30 * kMiB);
  EXPECT_EQ(p->staging_slots, 3);
  EXPECT_EQ(p->staging_bytes, 30 * kMiB);
  EXPECT_FALSE(p->automatic);
  EXPECT_THAT(p->report(), HasSubstr("host (streamed): layers 2, 5, 7"));
  expect_within_budget(in, *p);
}

TEST(PlannerTest, AutoSpillsToHostAndCountsTheStagingRing) {
  // 90 MiB for weights: without the ring three layers out would do (90 MiB resident); with a
  // ring of 3 x 10 MiB six must go.
  PlannerInputs in = model(100 * kMiB);
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_TRUE(p->automatic);
  EXPECT_EQ(p->num_streamed(), 6);
  EXPECT_EQ(units_in(*p, WeightTier::kHost), (std::vector<int>{2, 3, 4, 6, 7, 8}));
  EXPECT_EQ(p->staging_bytes, 30 * kMiB);
  EXPECT_EQ(p->device_bytes, 60 * kMiB);
  EXPECT_EQ(p->host_bytes, 60 * kMiB);
  EXPECT_EQ(p->tiers[0], WeightTier::kDevice);  // the embedding stays
  EXPECT_EQ(p->tiers[9], WeightTier::kDevice);  // the head is streamed last
  expect_within_budget(in, *p);
  EXPECT_THAT(p->report(), HasSubstr("host (streamed): layers 1-3, 5-7"));
  EXPECT_THAT(p->report(), HasSubstr("placed automatically"));
}

TEST(PlannerTest, RingIsNoLargerThanTheStreamedUnitsAndFollowsDepth) {
  PlannerInputs in = model(200 * kMiB);
  in.cpu_offload_bytes = 10 * kMiB;
  auto one = plan_weights(in);
  ASSERT_TRUE(one.is_ok());
  EXPECT_EQ(one->staging_slots, 1);
  in.cpu_offload_bytes = 80 * kMiB;
  for (int32_t depth : {1, 2, 3}) {
    in.prefetch_depth = depth;
    auto p = plan_weights(in);
    ASSERT_TRUE(p.is_ok());
    EXPECT_EQ(p->staging_slots, depth + 1);
    EXPECT_EQ(p->staging_bytes, static_cast<uint64_t>(depth + 1) * 10 * kMiB);
  }
  in.prefetch_depth = 0;
  EXPECT_EQ(plan_weights(in).status().code(), StatusCode::kInvalidArgument);
}

TEST(PlannerTest, HostFullSpillsToDisk) {
  PlannerInputs in = model(100 * kMiB);
  in.host_limit = 30 * kMiB;
  in.has_offload_dir = true;
  in.disk_limit = 1000 * kMiB;
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(units_in(*p, WeightTier::kHost).size(), 3u);
  EXPECT_EQ(units_in(*p, WeightTier::kDisk).size(), 3u);
  EXPECT_EQ(p->host_bytes, 30 * kMiB);
  EXPECT_EQ(p->disk_bytes, 30 * kMiB);
  EXPECT_EQ(p->disk_streamed_bytes, 30 * kMiB);
  EXPECT_TRUE(p->automatic);
  expect_within_budget(in, *p);
}

TEST(PlannerTest, DiskReadInPlaceNeedsNoOffloadDirSpace) {
  PlannerInputs in = model(100 * kMiB);
  for (PlannerUnit& u : in.units) u.disk_bytes = 0;
  in.cpu_offload_bytes = 0;
  in.has_offload_dir = true;
  in.disk_limit = 0;
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(units_in(*p, WeightTier::kDisk).size(), 6u);
  EXPECT_EQ(p->host_bytes, 0u);
  EXPECT_EQ(p->disk_bytes, 0u);
  EXPECT_EQ(p->disk_streamed_bytes, 60 * kMiB);
}

TEST(PlannerTest, ExplicitDiskOffloadStreamsFromDisk) {
  PlannerInputs in = model(200 * kMiB);
  in.disk_offload_bytes = 20 * kMiB;
  in.has_offload_dir = true;
  in.disk_limit = 1000 * kMiB;
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(units_in(*p, WeightTier::kDisk).size(), 2u);
  EXPECT_EQ(p->num_streamed(), 2);
  EXPECT_FALSE(p->automatic);
}

TEST(PlannerTest, NoOffloadDirNamesTheFlag) {
  PlannerInputs in = model(100 * kMiB);
  in.host_limit = 30 * kMiB;
  auto p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(p.status().message(), HasSubstr("--offload-dir"));
  EXPECT_THAT(p.status().message(), HasSubstr("30.0 MiB more is needed"));
}

TEST(PlannerTest, DiskTooSmallSaysHowMuchIsMissing) {
  PlannerInputs in = model(100 * kMiB);
  in.host_limit = 30 * kMiB;
  in.has_offload_dir = true;
  in.disk_limit = 25 * kMiB;
  auto p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_THAT(p.status().message(), HasSubstr("5.0 MiB more is needed"));
  EXPECT_THAT(p.status().message(), HasSubstr("--offload-dir"));
}

// Units read in place from the checkpoint take no space under --offload-dir: a full disk
// still streams them; a one-time copy that does not fit says how much is missing.
TEST(PlannerTest, InPlaceDiskUnitsNeedNoFreeSpace) {
  PlannerInputs in = model(200 * kMiB);
  for (PlannerUnit& u : in.units) u.disk_bytes = 0;  // all readable in place
  in.disk_offload_bytes = 30 * kMiB;
  in.has_offload_dir = true;
  in.disk_limit = 0;
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(units_in(*p, WeightTier::kDisk).size(), 3u);
  EXPECT_EQ(p->disk_bytes, 0u);
  for (PlannerUnit& u : in.units) u.disk_bytes = u.device_bytes;  // all need a copy
  in.disk_limit = 25 * kMiB;
  p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_THAT(p.status().message(), HasSubstr("--disk-offload-gb needs 30.0 MiB"));
  EXPECT_THAT(p.status().message(), HasSubstr("5.0 MiB more is needed"));
}

TEST(PlannerTest, NothingCanHoldItGivesOneMessageWithTheMissingAmount) {
  // Smallest device use: embedding + head resident (40) + ring 3 x 10 + 10 fixed = 80 MiB.
  PlannerInputs in = model(50 * kMiB);
  in.has_offload_dir = true;
  in.disk_limit = 1000 * kMiB;
  auto p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(p.status().message(), HasSubstr("30.0 MiB more is needed"));
  EXPECT_THAT(p.status().message(), HasSubstr("--device-memory-gb"));
  EXPECT_THAT(p.status().message(), HasSubstr("--max-model-len"));
  // A budget below the fixed bytes alone fails the same way.
  in.device_budget = 1 * kMiB;
  EXPECT_THAT(plan_weights(in).status().message(), HasSubstr("79.0 MiB more is needed"));
}

TEST(PlannerTest, ExplicitTiersThatMoveTooLittleNameBothFlags) {
  PlannerInputs in = model(100 * kMiB);
  in.cpu_offload_bytes = 10 * kMiB;
  in.disk_offload_bytes = 10 * kMiB;
  in.has_offload_dir = true;
  in.disk_limit = 1000 * kMiB;
  auto p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_THAT(p.status().message(), HasSubstr("--cpu-offload-gb or --disk-offload-gb"));
  EXPECT_THAT(p.status().message(), HasSubstr("40.0 MiB more is needed"));
}

TEST(PlannerTest, ExplicitCpuOffloadBeyondHostMemoryFails) {
  PlannerInputs in = model(200 * kMiB);
  in.cpu_offload_bytes = 50 * kMiB;
  in.host_limit = 20 * kMiB;
  auto p = plan_weights(in);
  ASSERT_FALSE(p.is_ok());
  EXPECT_THAT(p.status().message(), HasSubstr("--cpu-offload-gb"));
  EXPECT_THAT(p.status().message(), HasSubstr("30.0 MiB more is needed"));
}

TEST(PlannerTest, HeadStreamsLastEvenWhenSmaller) {
  PlannerInputs in = model(200 * kMiB);
  in.units.back().device_bytes = in.units.back().slot_bytes = 5 * kMiB;
  in.cpu_offload_bytes = 10 * kMiB;
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->num_streamed(), 1);
  EXPECT_EQ(p->tiers[9], WeightTier::kDevice);
  in.units.back().stream_last = false;  // then the smaller unit goes first
  p = plan_weights(in);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->tiers[9], WeightTier::kHost);
}

TEST(PlannerTest, HeadStreamsOnlyAfterEveryLayer) {
  // With the 8 layers out: 20 + 20 resident + a 3 x 10 MiB ring + 10 fixed = 80 MiB fits 85;
  // the head out too would need a ring of 3 x 20 MiB, which saves nothing.
  PlannerInputs in = model(85 * kMiB);
  auto p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->num_streamed(), 8);
  EXPECT_EQ(p->tiers[9], WeightTier::kDevice);
  // A head smaller than two layers' slots is worth streaming at depth 1: with it out,
  // 20 + 2 x 15 + 10 fixed = 60 MiB; with only the layers out, 20 + 15 + 2 x 10 + 10 = 65.
  in = model(62 * kMiB);
  in.units.back().device_bytes = in.units.back().slot_bytes = 15 * kMiB;
  in.prefetch_depth = 1;
  p = plan_weights(in);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->num_streamed(), 9);
  EXPECT_EQ(p->slot_bytes, 15 * kMiB);
  expect_within_budget(in, *p);
}

}  // namespace
}  // namespace tierserve

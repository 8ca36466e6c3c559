// Planner: where each unit of weights lives (DESIGN.md §2, §6 invariant 7). A pure function of
// the units' sizes and the tiers' budgets, run once at start-up: every unit is resident in the
// device tier, streamed from the host tier, or streamed from the disk tier through a ring of
// device staging slots (offload/weight_streamer.h).
//
// Policy:
// - Units that are not streamable (the embedding: the lookup reads a few rows) stay resident.
// - When the resident set does not fit, the fewest streamable units are streamed that make the
//   rest fit beside the staging ring, which takes min(prefetch_depth + 1, streamed units) slots
//   of the largest streamed unit's slot_bytes, in the device tier. Units marked stream_last
//   (the head) go only after all others; otherwise smaller units go first (a large one's slot
//   enlarges the whole ring). Among units of one size the streamed ones are spread evenly over
//   execution order (every other layer for half of them), so that each transfer overlaps the
//   compute of resident layers.
// - Streamed units go to the host tier first (faster), the rest to the disk tier; disk units
//   are spread evenly among the streamed ones.
// - An explicit --cpu-offload-gb N (or --disk-offload-gb N) streams from that tier the fewest
//   units (in the order above) whose device_bytes reach N, even when everything would fit, and
//   no more: any further spill goes to the other tier when that one is automatic. Automatic
//   means: as much as the tier's limit allows (host_limit; disk_limit under --offload-dir, none
//   without it), only when the device needs it.
// - When no placement exists the error is kResourceExhausted with one message that says how
//   much is missing and which flag to change.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tierserve {

enum class WeightTier : uint8_t {
  kDevice,  // resident in the device tier for the engine's life
  kHost,    // kept in the host tier, copied into a staging slot ahead of use
  kDisk,    // read from disk into a staging slot ahead of use
};
const char* weight_tier_name(WeightTier tier);  // "device", "host", "disk"

// One unit of weights as the planner sees it (an embedding, a decoder layer, the head).
struct PlannerUnit {
  std::string name;           // "embedding", "layer 3", "head"
  uint64_t device_bytes = 0;  // bytes when resident, in the device layout (packed where the
                              // backend packs); also what the host tier holds when host-streamed
  uint64_t slot_bytes = 0;    // staging-slot bytes the unit needs when streamed from any tier
  uint64_t disk_bytes = 0;    // bytes under --offload-dir when disk-streamed (0 when read in
                              // place from the checkpoint's own files)
  bool streamable = false;    // may leave the device tier
  bool stream_last = false;   // streamed only once every other streamable unit is (the head:
                              // large, read once per step)
};

struct PlannerInputs {
  std::vector<PlannerUnit> units;  // in execution order
  uint64_t device_budget = 0;      // device-tier bytes tierserve may use (utilization x
                                   // capacity, or --device-memory-gb)
  uint64_t device_reserved = 0;    // activations and other fixed device bytes
  uint64_t min_kv_bytes = 0;       // KV of one request of --max-model-len (must fit on device)
  std::optional<uint64_t> cpu_offload_bytes;   // --cpu-offload-gb N; nullopt = auto
  std::optional<uint64_t> disk_offload_bytes;  // --disk-offload-gb N; nullopt = auto
  uint64_t host_limit = 0;       // most host memory weights may take (auto or explicit)
  bool has_offload_dir = false;  // --offload-dir given: the disk tier exists
  uint64_t disk_limit = 0;       // free bytes under --offload-dir
  int32_t prefetch_depth = 2;    // --offload-prefetch-depth, >= 1
  std::string device_flag = "--gpu-memory-utilization";  // the flag that sets device_budget
                                                         // ("--device-memory-gb" on the CPU)
};

struct Placement {
  std::vector<std::string> names;    // per unit, from the inputs
  std::vector<WeightTier> tiers;     // per unit
  uint64_t device_bytes = 0;         // resident weights in the device tier (staging excluded)
  uint64_t host_bytes = 0;           // weights in the host tier (device layout)
  uint64_t disk_bytes = 0;           // bytes under --offload-dir (one-time copies)
  uint64_t disk_streamed_bytes = 0;  // device_bytes of the disk-streamed units
  int32_t staging_slots = 0;         // min(prefetch_depth + 1, streamed units); 0 when none
  uint64_t slot_bytes = 0;           // bytes per staging slot (largest streamed slot_bytes)
  uint64_t staging_bytes = 0;        // staging_slots * slot_bytes, in the device tier
  int32_t prefetch_depth = 0;        // from the inputs
  bool automatic = false;            // units were spilled because the device could not hold them
                                     // (beyond what explicit offload flags asked for)

  int32_t num_streamed() const;
  // One line per tier, e.g. "device: embedding, layers 0-23 step 2, head (1.1 GiB)" ...
  std::string report() const;
};

// Decides a placement, or kResourceExhausted (nothing can hold the model plus one request:
// how much is missing and which flag to raise) or kInvalidArgument (a bad input, e.g. depth).
Result<Placement> plan_weights(const PlannerInputs& inputs);

}  // namespace tierserve

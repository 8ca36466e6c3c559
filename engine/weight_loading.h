// Loading a model's weights into the tiers (DESIGN.md §2, §6 invariant 7): the Planner decides
// per unit (embedding, decoder layer, head) whether it is resident in the device tier or
// streamed from the host tier or from disk, and the weights are loaded accordingly, into a
// ResidentWeightProvider when everything is resident (exactly load_weights) or a WeightStreamer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "common/status.h"
#include "common/topology.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "kernels/backend.h"
#include "offload/disk_store.h"
#include "offload/planner.h"
#include "offload/weight_provider.h"

namespace tierserve {

struct WeightTierOptions {
  std::optional<double> cpu_offload_gb;   // --cpu-offload-gb N (GiB, >= 0); nullopt = auto
  std::optional<double> disk_offload_gb;  // --disk-offload-gb N (GiB, >= 0); nullopt = auto
  std::filesystem::path offload_dir;      // --offload-dir; empty = no disk tier
  int32_t prefetch_depth = 2;             // --offload-prefetch-depth, 1..64
  int32_t queue_depth = 64;               // --offload-queue-depth: the disk tier's io_uring
  uint64_t device_budget = 0;             // device-tier bytes (utilization x capacity, or
                                          // --device-memory-gb); 0 = the backend's capacity
  uint64_t device_reserved = 0;           // activations and other fixed device bytes
  uint64_t min_kv_bytes = 0;              // KV of one request of --max-model-len
  uint64_t host_memory_limit = 0;         // most host memory the weights may take; 0 = 90% of
                                          // the available RAM, less on the CPU backend (whose
                                          // device tier is RAM too) the device tier's share:
                                          // min(device budget, weights + reserved + KV), less
                                          // host_reserved
  uint64_t host_reserved = 0;             // host memory taken by others (the KV host tier)
  uint64_t disk_reserved = 0;             // --offload-dir space taken by others (the KV disk
                                          // tier), less from its free space
  bool read_checkpoint_in_place = true;   // disk-streamed safetensors are read from the
                                          // checkpoint's own files where alignment allows;
                                          // false: always from a one-time copy in offload_dir
  const Topology* topology = nullptr;     // NUMA placement of the host tier; may be null;
                                          // must outlive the provider
  LoadProgressFn on_progress;             // may be empty; called during load_tiered_weights only
  DiskFaultHook fault_hook_for_testing;   // tests only: faults on the weight disk tier
};

struct LoadedWeights {
  std::unique_ptr<WeightProvider> provider;
  Placement placement;
};

// Plans the placement (logging its report: a warning when units were placed automatically
// because the device could not hold them) and loads the weights. Errors: those of
// load_weights; plan_weights' kResourceExhausted when no placement exists; a bad option
// (kInvalidArgument); a missing --offload-dir (kNotFound); tier allocation and disk errors.
// `backend` must outlive the provider. Dummy weights have the same values whatever the
// placement.
Result<LoadedWeights> load_tiered_weights(const ModelConfig& config,
                                          const std::filesystem::path& model_dir, LoadFormat format,
                                          Backend* backend, const WeightTierOptions& options,
                                          uint64_t seed = 0);

}  // namespace tierserve

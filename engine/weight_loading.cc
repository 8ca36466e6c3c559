#include "engine/weight_loading.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>

#include "common/logging.h"
#include "common/units.h"
#include "offload/resident_weight_provider.h"
#include "offload/weight_streamer.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kReadChunk = 8 * kMiB;    // one O_DIRECT read; several per unit keep the
                                             // device queue full
constexpr uint64_t kMergeGap = 64 * kKiB;    // tensors closer than this are read as one span
constexpr uint64_t kExtentBytes = 8 * kMiB;  // one-time copy extents: large sequential reads

// How a disk-streamed unit is read in place from the checkpoint's files.
struct InPlacePlan {
  bool possible = false;  // every tensor's offset is a multiple of its dtype size
  WeightUnit unit;        // views with null data; slot_offsets say where each lands
  std::vector<int64_t> slot_offsets;
  std::vector<FileRead> reads;                // `file` indexes `files`
  std::vector<const SafetensorsFile*> files;  // per read
  uint64_t slot_bytes = 0;
};

TensorView shaped_view(DType dtype, const std::vector<int64_t>& shape, DeviceKind device) {
  if (shape.size() == 1) return TensorView::contiguous(nullptr, dtype, {shape[0]}, device);
  return TensorView::contiguous(nullptr, dtype, {shape[0], shape[1]}, device);
}

InPlacePlan plan_in_place(const ModelConfig& config, const ResolvedWeights& w, int32_t unit,
                          DeviceKind device) {
  InPlacePlan plan;
  if (w.format != LoadFormat::kAuto || w.gguf != nullptr) return plan;  // GGUF: converted
  struct Piece {
    const SafetensorsFile* file;
    uint64_t offset, bytes;
    int32_t slot;
    size_t spec;
  };
  std::vector<Piece> pieces;
  auto add = [&](size_t i, int32_t slot) {
    const CheckpointTensor& t = w.sources[i];
    uint64_t bytes = dtype_size(w.dtypes[i]);
    for (int64_t d : w.specs[i].shape) bytes *= static_cast<uint64_t>(d);
    pieces.push_back({t.file, t.file->file_offset(*t.entry) + w.source_offsets[i], bytes, slot, i});
  };
  for (size_t i = 0; i < w.specs.size(); ++i) {
    if (w.specs[i].unit != unit) continue;
    // Transformed at load (NormHead, Q4 repacking): not the file's bytes.
    if (w.specs[i].normalize_rows || w.specs[i].quantized) return plan;
    add(i, w.specs[i].slot);
  }
  if (unit == head_unit(config) && config.tie_word_embeddings) add(0, kLmHead);  // the table
  for (const Piece& p : pieces) {
    if (p.offset % dtype_size(w.dtypes[p.spec]) != 0) return plan;
  }
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return a.file != b.file ? a.file->path() < b.file->path() : a.offset < b.offset;
  });

  plan.unit.name = weight_unit_name(config, unit);
  plan.unit.tensors.resize(static_cast<size_t>(weight_unit_slots(config, unit)));
  plan.slot_offsets.assign(plan.unit.tensors.size(), kKeepView);
  uint64_t slot_pos = 0;
  for (size_t r = 0; r < pieces.size();) {
    // A run of pieces in one file, each starting within kMergeGap of the previous end.
    size_t e = r + 1;
    uint64_t end = pieces[r].offset + pieces[r].bytes;
    while (e < pieces.size() && pieces[e].file == pieces[r].file &&
           pieces[e].offset <= end + kMergeGap) {
      end = std::max(end, pieces[e].offset + pieces[e].bytes);
      ++e;
    }
    const uint64_t begin = pieces[r].offset / kPage * kPage;
    const uint64_t span = align_up(end, kPage) - begin;
    for (uint64_t c = 0; c < span; c += kReadChunk) {
      plan.reads.push_back({0, begin + c, std::min(kReadChunk, span - c), slot_pos + c});
      plan.files.push_back(pieces[r].file);
    }
    for (size_t i = r; i < e; ++i) {
      const Piece& p = pieces[i];
      const size_t slot = static_cast<size_t>(p.slot);
      plan.unit.tensors[slot] = shaped_view(w.dtypes[p.spec], w.specs[p.spec].shape, device);
      plan.slot_offsets[slot] = static_cast<int64_t>(slot_pos + (p.offset - begin));
    }
    slot_pos += span;
    r = e;
  }
  plan.slot_bytes = slot_pos;
  plan.possible = true;
  return plan;
}

// MemAvailable from /proc/meminfo, else free pages.
uint64_t available_ram() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * kKiB;
  }
  return static_cast<uint64_t>(sysconf(_SC_AVPHYS_PAGES)) *
         static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

Result<std::optional<uint64_t>> gib_flag(const std::optional<double>& gb, const char* flag) {
  if (!gb.has_value()) return std::optional<uint64_t>();
  if (!std::isfinite(*gb) || *gb < 0 || *gb > 1e6) {
    return invalid_argument(std::string(flag) + " must be a number of GiB >= 0, got " +
                            std::to_string(*gb));
  }
  return std::optional<uint64_t>(static_cast<uint64_t>(*gb * static_cast<double>(kGiB)));
}

}  // namespace

Result<LoadedWeights> load_tiered_weights(const ModelConfig& config,
                                          const std::filesystem::path& model_dir, LoadFormat format,
                                          Backend* backend, const WeightTierOptions& options,
                                          uint64_t seed) {
  TS_ASSIGN_OR_RETURN(ResolvedWeights w, resolve_weights(config, model_dir, format, backend, seed));
  const bool on_cpu = backend->device() == DeviceKind::kCpu;

  PlannerInputs in;
  TS_ASSIGN_OR_RETURN(in.cpu_offload_bytes, gib_flag(options.cpu_offload_gb, "--cpu-offload-gb"));
  TS_ASSIGN_OR_RETURN(in.disk_offload_bytes,
                      gib_flag(options.disk_offload_gb, "--disk-offload-gb"));
  in.device_budget = options.device_budget > 0 ? options.device_budget : backend->memory_capacity();
  in.device_reserved = options.device_reserved;
  in.min_kv_bytes = options.min_kv_bytes;
  in.prefetch_depth = options.prefetch_depth;
  in.device_flag = on_cpu ? "--device-memory-gb" : "--gpu-memory-utilization";
  in.host_limit = options.host_memory_limit;
  if (in.host_limit == 0) {
    const uint64_t ram = available_ram() / 10 * 9;
    // On the CPU the device tier is RAM too: at most the budget, or what the model needs.
    const uint64_t taken =
        on_cpu ? std::min(in.device_budget, w.total_bytes() + in.device_reserved + in.min_kv_bytes)
               : 0;
    const uint64_t others = taken + options.host_reserved;
    in.host_limit = ram > others ? ram - others : 0;
  }
  if (!options.offload_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(options.offload_dir, ec)) {
      return not_found("--offload-dir " + options.offload_dir.string() +
                       " is not an existing directory");
    }
    const fs::space_info space = fs::space(options.offload_dir, ec);
    if (ec) {
      return io_error("--offload-dir " + options.offload_dir.string() + ": " + ec.message());
    }
    in.has_offload_dir = true;
    in.disk_limit =
        space.available > options.disk_reserved ? space.available - options.disk_reserved : 0;
  }

  // The units as the planner sees them.
  const int32_t num_units = w.num_units();
  std::vector<InPlacePlan> in_place(static_cast<size_t>(num_units));
  for (int32_t u = 0; u < num_units; ++u) {
    PlannerUnit p;
    p.name = weight_unit_name(config, u);
    p.device_bytes = w.unit_bytes(u);
    p.slot_bytes = align_up(p.device_bytes, kPage);
    p.disk_bytes = disk_copy_bytes(p.device_bytes, kExtentBytes);
    p.streamable = u != kEmbeddingUnit && (u != head_unit(config) || w.head_owns_lm_head(config));
    p.stream_last = u == head_unit(config);
    if (options.read_checkpoint_in_place && p.streamable) {
      in_place[static_cast<size_t>(u)] = plan_in_place(config, w, u, backend->device());
      if (in_place[static_cast<size_t>(u)].possible) {
        p.slot_bytes = std::max(p.slot_bytes, in_place[static_cast<size_t>(u)].slot_bytes);
        p.disk_bytes = 0;
      }
    }
    in.units.push_back(std::move(p));
  }
  TS_ASSIGN_OR_RETURN(Placement placement, plan_weights(in));
  if (placement.automatic) {
    TS_LOG(Warning) << placement.report();
  } else if (placement.num_streamed() > 0) {
    TS_LOG(Info) << placement.report();
  }

  LoadedWeights out;
  if (placement.num_streamed() == 0) {
    TS_ASSIGN_OR_RETURN(
        out.provider, load_weights(config, model_dir, format, backend, seed, options.on_progress));
    out.placement = std::move(placement);
    return out;
  }

  // Resident units: one arena, in unit order.
  uint64_t arena_bytes = 0;
  for (int32_t u = 0; u < num_units; ++u) {
    if (placement.tiers[static_cast<size_t>(u)] == WeightTier::kDevice)
      arena_bytes += w.unit_bytes(u);
  }
  auto arena_or = backend->allocate(arena_bytes);
  if (!arena_or.is_ok()) {
    return arena_or.status().with_context("resident weights of " + format_bytes(arena_bytes) +
                                          " in the device tier");
  }
  char* arena = static_cast<char*>(arena_or.value());
  WeightStreamerOptions so;
  so.prefetch_depth = options.prefetch_depth;
  so.queue_depth = options.queue_depth;
  so.offload_dir = options.offload_dir;
  so.extent_bytes = kExtentBytes;
  so.topology = options.topology;
  so.fault_hook_for_testing = options.fault_hook_for_testing;
  std::map<const SafetensorsFile*, int32_t> file_ids;
  std::vector<StreamedUnit> units(static_cast<size_t>(num_units));
  WeightUnit embedding;  // the embedding unit's views (it is always resident)
  uint64_t arena_used = 0;
  // Units are put in place in two passes (resident ones here, host and disk copies inside
  // WeightStreamer::create), so progress is counted in one place.
  LoadProgress progress{0, num_units, 0, w.total_bytes()};
  auto unit_done = [&progress, &w, &options](int32_t u) {
    ++progress.units_done;
    progress.bytes_done += w.unit_bytes(u);
    if (options.on_progress) options.on_progress(progress);
  };
  for (int32_t u = 0; u < num_units; ++u) {
    StreamedUnit& su = units[static_cast<size_t>(u)];
    su.tier = placement.tiers[static_cast<size_t>(u)];
    su.unit.name = weight_unit_name(config, u);
    InPlacePlan& plan = in_place[static_cast<size_t>(u)];
    if (su.tier == WeightTier::kDevice) {
      su.unit = write_weight_unit(config, w, u, arena + arena_used, backend, &embedding);
      arena_used += w.unit_bytes(u);
      if (u == kEmbeddingUnit) embedding = su.unit;
      unit_done(u);
    } else if (su.tier == WeightTier::kDisk && plan.possible) {
      su.unit = std::move(plan.unit);
      su.slot_offsets = std::move(plan.slot_offsets);
      for (size_t r = 0; r < plan.reads.size(); ++r) {
        auto [it, added] = file_ids.emplace(plan.files[r], static_cast<int32_t>(so.files.size()));
        if (added) so.files.push_back(plan.files[r]->path());
        plan.reads[r].file = it->second;
      }
      su.file_reads = std::move(plan.reads);
      unit_done(u);  // read from the checkpoint when streamed: nothing to write now
    } else {
      su.image_bytes = w.unit_bytes(u);
      su.write_image = [&config, &w, u, backend, &embedding,
                        &unit_done](char* dst) -> Result<WeightUnit> {
        WeightUnit unit = write_weight_unit(config, w, u, dst, backend, &embedding);
        unit_done(u);
        return unit;
      };
    }
  }
  TS_CHECK(embedding.tensors.size() == kNumEmbeddingSlots) << "the embedding is always resident";
  TS_ASSIGN_OR_RETURN(std::unique_ptr<WeightStreamer> streamer,
                      WeightStreamer::create(backend, std::move(units), arena, arena_bytes, so));
  if (streamer->num_slots() != placement.staging_slots ||
      streamer->slot_bytes() > placement.slot_bytes) {
    return internal_error("weight streamer ring " + std::to_string(streamer->num_slots()) + " x " +
                          format_bytes(streamer->slot_bytes()) + " differs from the plan's " +
                          std::to_string(placement.staging_slots) + " x " +
                          format_bytes(placement.slot_bytes));
  }
  out.provider = std::move(streamer);
  out.placement = std::move(placement);
  return out;
}

}  // namespace tierserve

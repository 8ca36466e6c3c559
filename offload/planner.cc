#include "offload/planner.h"

#include <algorithm>
#include <map>

#include "common/units.h"

namespace tierserve {
namespace {

// Which of n positions to pick for k picks spread evenly: i is picked when
// floor((i + 1) k / n) > floor(i k / n). k = n / 2 picks every odd position.
std::vector<bool> spread(int64_t k, int64_t n) {
  std::vector<bool> pick(static_cast<size_t>(n), false);
  for (int64_t i = 0; i < n; ++i) pick[static_cast<size_t>(i)] = (i + 1) * k / n > i * k / n;
  return pick;
}

// The candidates for streaming, and which k of them stream: groups of equal slot_bytes in
// ascending order (stream_last units after all others), filled whole; the partly filled group
// gets its picks spread evenly.
class Candidates {
 public:
  explicit Candidates(const std::vector<PlannerUnit>& units) {
    for (bool last : {false, true}) {
      std::map<uint64_t, std::vector<int32_t>> by_size;
      for (size_t u = 0; u < units.size(); ++u) {
        if (units[u].streamable && units[u].stream_last == last) {
          by_size[units[u].slot_bytes].push_back(static_cast<int32_t>(u));
        }
      }
      for (auto& [bytes, group] : by_size) groups_.push_back(std::move(group));
    }
  }
  int64_t size() const {
    int64_t n = 0;
    for (const auto& g : groups_) n += static_cast<int64_t>(g.size());
    return n;
  }
  // The k streamed units, in execution order.
  std::vector<int32_t> pick(int64_t k) const {
    std::vector<int32_t> out;
    for (const auto& g : groups_) {
      const int64_t n = static_cast<int64_t>(g.size());
      if (k >= n) {
        out.insert(out.end(), g.begin(), g.end());
        k -= n;
        continue;
      }
      std::vector<bool> p = spread(k, n);
      for (int64_t i = 0; i < n; ++i) {
        if (p[static_cast<size_t>(i)]) out.push_back(g[static_cast<size_t>(i)]);
      }
      break;
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::vector<std::vector<int32_t>> groups_;
};

struct Layout {
  std::vector<WeightTier> tiers;
  uint64_t resident = 0, host = 0, disk = 0, disk_streamed = 0, slot = 0;
  int32_t slots = 0;
  uint64_t device_use() const { return resident + static_cast<uint64_t>(slots) * slot; }
};

// Streams `streamed` (execution order); `num_disk` of them, spread evenly, from disk.
Layout make_layout(const PlannerInputs& in, const std::vector<int32_t>& streamed,
                   int64_t num_disk) {
  Layout l;
  l.tiers.assign(in.units.size(), WeightTier::kDevice);
  const int64_t k = static_cast<int64_t>(streamed.size());
  const std::vector<bool> disk = spread(num_disk, k);
  for (int64_t i = 0; i < k; ++i) {
    const size_t u = static_cast<size_t>(streamed[static_cast<size_t>(i)]);
    l.tiers[u] = disk[static_cast<size_t>(i)] ? WeightTier::kDisk : WeightTier::kHost;
    l.slot = std::max(l.slot, align_up(in.units[u].slot_bytes, 4096));
  }
  l.slots = static_cast<int32_t>(std::min<int64_t>(in.prefetch_depth + 1, k));
  for (size_t u = 0; u < in.units.size(); ++u) {
    const PlannerUnit& p = in.units[u];
    switch (l.tiers[u]) {
      case WeightTier::kDevice:
        l.resident += p.device_bytes;
        break;
      case WeightTier::kHost:
        l.host += p.device_bytes;
        break;
      case WeightTier::kDisk:
        l.disk += p.disk_bytes;
        l.disk_streamed += p.device_bytes;
        break;
    }
  }
  return l;
}

uint64_t sum_device_bytes(const PlannerInputs& in, const std::vector<int32_t>& units) {
  uint64_t s = 0;
  for (int32_t u : units) s += in.units[static_cast<size_t>(u)].device_bytes;
  return s;
}

// The fewest streamed units (chosen as for streaming) whose device bytes reach `bytes`.
int64_t units_for_bytes(const PlannerInputs& in, const Candidates& c, uint64_t bytes) {
  for (int64_t k = 0; k < c.size(); ++k) {
    if (sum_device_bytes(in, c.pick(k)) >= bytes) return k;
  }
  return c.size();
}

std::string gib(uint64_t bytes) { return format_bytes(bytes); }

}  // namespace

const char* weight_tier_name(WeightTier tier) {
  switch (tier) {
    case WeightTier::kDevice:
      return "device";
    case WeightTier::kHost:
      return "host";
    case WeightTier::kDisk:
      return "disk";
  }
  return "?";
}

int32_t Placement::num_streamed() const {
  int32_t n = 0;
  for (WeightTier t : tiers) n += t != WeightTier::kDevice;
  return n;
}

Result<Placement> plan_weights(const PlannerInputs& in) {
  if (in.prefetch_depth < 1 || in.prefetch_depth > 64) {
    return invalid_argument("--offload-prefetch-depth must be in [1, 64], got " +
                            std::to_string(in.prefetch_depth));
  }
  uint64_t total = 0;
  for (const PlannerUnit& u : in.units) total += u.device_bytes;
  const uint64_t fixed = in.device_reserved + in.min_kv_bytes;
  const Candidates cands(in.units);
  const int64_t m = cands.size();
  const std::string prefix = "cannot place the model's weights (" + gib(total) +
                             ") together with one request of --max-model-len: ";

  // The device decides the fewest streamed units; a layout with no disk units has the same
  // device use as any other split of the same units.
  auto device_fits = [&](int64_t k) {
    return fixed + make_layout(in, cands.pick(k), 0).device_use() <= in.device_budget;
  };
  auto first_fit = [&](int64_t from) {
    for (int64_t k = from; k <= m; ++k) {
      if (device_fits(k)) return k;
    }
    return int64_t{-1};
  };
  const bool host_explicit = in.cpu_offload_bytes.has_value();
  const bool disk_explicit = in.disk_offload_bytes.has_value();
  const int64_t host_forced = host_explicit ? units_for_bytes(in, cands, *in.cpu_offload_bytes) : 0;
  const int64_t disk_forced =
      disk_explicit ? units_for_bytes(in, cands, *in.disk_offload_bytes) : 0;
  const int64_t forced = std::min(m, host_forced + disk_forced);
  const int64_t k_device = first_fit(0);
  const int64_t k = k_device < 0 ? -1 : first_fit(std::max(k_device, forced));
  if (k < 0) {
    uint64_t best = UINT64_MAX;
    for (int64_t j = 0; j <= m; ++j) {
      best = std::min(best, fixed + make_layout(in, cands.pick(j), 0).device_use());
    }
    return resource_exhausted(
        prefix + "the device tier must hold at least " + gib(best) +
        " (weights that stay resident and the staging ring, plus " + gib(in.device_reserved) +
        " of activations and " + gib(in.min_kv_bytes) + " of KV for one request) but has " +
        gib(in.device_budget) + "; " + gib(best - in.device_budget) + " more is needed: raise " +
        in.device_flag + ", or lower --max-model-len or --offload-prefetch-depth");
  }
  const std::vector<int32_t> streamed = cands.pick(k);

  // Split the streamed units between host and disk.
  int64_t num_disk = 0;
  if (host_explicit && disk_explicit) {
    if (k > forced) {
      const uint64_t extra =
          sum_device_bytes(in, streamed) - sum_device_bytes(in, cands.pick(forced));
      return resource_exhausted(
          prefix +
          "--cpu-offload-gb and --disk-offload-gb move too little out of the device "
          "tier; " +
          gib(extra) + " more is needed: raise --cpu-offload-gb or --disk-offload-gb (or " +
          in.device_flag + ")");
    }
    num_disk = std::min(disk_forced, k);
  } else if (host_explicit) {
    num_disk = k - std::min(host_forced, k);
  } else if (disk_explicit) {
    num_disk = std::min(disk_forced, k);
  } else {
    num_disk = k;
    while (num_disk > 0 && make_layout(in, streamed, num_disk - 1).host <= in.host_limit) {
      --num_disk;
    }
  }
  const Layout l = make_layout(in, streamed, num_disk);
  if (l.host > in.host_limit) {
    const std::string what =
        host_explicit ? "--cpu-offload-gb asks the host tier for " : "the host tier must hold ";
    return resource_exhausted(
        prefix + what + gib(l.host) + " but only " + gib(in.host_limit) +
        " of host memory is available; " + gib(l.host - in.host_limit) + " more is needed: " +
        (host_explicit ? "lower --cpu-offload-gb" : "raise --disk-offload-gb") + " or raise " +
        in.device_flag);
  }
  if (num_disk > 0 && !in.has_offload_dir) {
    return resource_exhausted(
        prefix + "the device tier holds " + gib(l.resident) + " of weights, the host tier " +
        gib(l.host) + "; " + gib(l.disk_streamed) +
        " more is needed: set --offload-dir (the disk tier)" +
        (host_explicit ? ", raise --cpu-offload-gb" : "") + " or raise " + in.device_flag);
  }
  // Only one-time copies take space: units read in place from the checkpoint take none.
  if (l.disk > in.disk_limit) {
    return resource_exhausted(
        prefix + (disk_explicit ? "--disk-offload-gb" : "the disk tier") + " needs " + gib(l.disk) +
        " under --offload-dir for weight copies but it has only " + gib(in.disk_limit) +
        " free (after the KV disk tier); " + gib(l.disk - in.disk_limit) +
        " more is needed: free space under --offload-dir, " +
        (disk_explicit ? "lower --disk-offload-gb, " : "") + "raise --cpu-offload-gb or " +
        in.device_flag);
  }

  Placement p;
  for (const PlannerUnit& u : in.units) p.names.push_back(u.name);
  p.tiers = l.tiers;
  p.device_bytes = l.resident;
  p.host_bytes = l.host;
  p.disk_bytes = l.disk;
  p.disk_streamed_bytes = l.disk_streamed;
  p.staging_slots = l.slots;
  p.slot_bytes = l.slots > 0 ? l.slot : 0;
  p.staging_bytes = static_cast<uint64_t>(p.staging_slots) * p.slot_bytes;
  p.prefetch_depth = in.prefetch_depth;
  p.automatic = k_device > forced;
  return p;
}

}  // namespace tierserve

namespace tierserve {
namespace {

// Layer numbers as runs: "0-11", "1-23 step 2", "5".
std::string format_layers(const std::vector<int64_t>& layers) {
  std::string out;
  size_t i = 0;
  while (i < layers.size()) {
    size_t j = i + 1;
    if (j < layers.size()) {
      const int64_t step = layers[j] - layers[i];
      while (j + 1 < layers.size() && layers[j + 1] - layers[j] == step) ++j;
      if (j - i + 1 < 3 && step != 1) j = i;  // two lone numbers
    } else {
      j = i;
    }
    if (!out.empty()) out += ", ";
    out += std::to_string(layers[i]);
    if (j > i) {
      out += "-" + std::to_string(layers[j]);
      if (layers[i + 1] - layers[i] != 1)
        out += " step " + std::to_string(layers[i + 1] - layers[i]);
    }
    i = j + 1;
  }
  return out;
}

// Unit names of one tier, with "layer N" names folded into runs.
std::string format_units(const std::vector<std::string>& names) {
  std::vector<std::string> parts;
  std::vector<int64_t> layers;
  auto flush = [&] {
    if (layers.empty()) return;
    parts.push_back((layers.size() == 1 ? "layer " : "layers ") + format_layers(layers));
    layers.clear();
  };
  for (const std::string& n : names) {
    const std::string kLayer = "layer ";
    if (n.rfind(kLayer, 0) == 0 && n.size() > kLayer.size() &&
        n.find_first_not_of("0123456789", kLayer.size()) == std::string::npos &&
        n.size() - kLayer.size() < 10) {
      layers.push_back(std::stoll(n.substr(kLayer.size())));
      continue;
    }
    flush();
    parts.push_back(n);
  }
  flush();
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace

std::string Placement::report() const {
  std::string out = "weights: " + format_bytes(device_bytes) + " resident in the device tier, " +
                    format_bytes(host_bytes) + " streamed from the host tier, " +
                    format_bytes(disk_streamed_bytes) + " streamed from disk";
  if (staging_slots > 0) {
    out += "; staging ring " + std::to_string(staging_slots) + " x " + format_bytes(slot_bytes) +
           " in the device tier (prefetch depth " + std::to_string(prefetch_depth) + ")";
  }
  if (disk_bytes > 0) out += "; " + format_bytes(disk_bytes) + " copied to --offload-dir";
  if (automatic) out += " (placed automatically: the device tier cannot hold them all)";
  for (WeightTier t : {WeightTier::kDevice, WeightTier::kHost, WeightTier::kDisk}) {
    std::vector<std::string> names_in_tier;
    for (size_t u = 0; u < tiers.size(); ++u) {
      if (tiers[u] == t) names_in_tier.push_back(names[u]);
    }
    if (names_in_tier.empty()) continue;
    out += std::string("\n  ") + weight_tier_name(t) +
           (t == WeightTier::kDevice ? "" : " (streamed)") + ": " + format_units(names_in_tier);
  }
  return out;
}

}  // namespace tierserve

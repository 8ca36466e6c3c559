// Streamed-weight decode (DESIGN.md §7): how well weight transfers overlap compute, and how
// close disk streaming comes to the disk's bandwidth. Dummy weights of a real model shape,
// batch-1 greedy decode driven through Model directly.
//
// (a) Half the decoder layers streamed from the host tier, at prefetch depth 1, 2 and 3. Per
//     decode step: compute time (the same step with every weight resident), transfer time (one
//     step's streamed units moved through the ring with no compute: the link's time for them),
//     stall time (time acquire waited), and the overlap efficiency
//     max(compute, transfer) / step time, which is 1 when the step takes only as long as the
//     slower of the two (the target is >= 0.9 at depth 2).
// (b) A device budget of about half the model (the smallest feasible at or above half: the
//     embedding, the head and the staging ring must fit), every streamed layer on disk
//     (--cpu-offload-gb 0; dummy weights go through the one-time copy in --offload-dir, read
//     back with O_DIRECT). Decode tokens/s against the disk bound: the disk's read bandwidth
//     (--disk-read-bw, the best of fio and a plain O_DIRECT reader, measured in
//     benchmarks/run_stream_bench) divided by the bytes streamed per token. At several prefetch
//     depths: the deeper the ring, the more reads are in flight, which a disk needs to reach its
//     full bandwidth.
// Medians over repeats. Usage:
//   stream_bench CONFIG_DIR --offload-dir DIR [--disk-read-bw BYTES_PER_S] [--threads N]
//                [--repeats R] [--steps N] [--parts host,disk] [--disk-depths 2,4,8]
//                [--markdown FILE]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/logging.h"
#include "common/topology.h"
#include "common/units.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/weight_loading.h"
#include "kernels/backend_registry.h"
#include "memory/kv_pool.h"
#include "offload/weight_streamer.h"

namespace tierserve {
namespace {

using bench::Clock;
using bench::median;
using bench::seconds_since;

struct Args {
  std::string config_dir;
  std::string offload_dir;
  double disk_read_bw = 0;  // bytes/s; 0 = unknown
  int threads = 0;
  int repeats = 5;
  int steps = 16;
  bool host = true, disk = true;
  std::vector<int32_t> disk_depths = {2, 4, 8};  // prefetch depths of part (b)
  std::string markdown;
};

constexpr int32_t kBlockSize = 16;
constexpr int32_t kPrompt = 16;

// Batch-1 greedy decode over one provider: a prompt, then single-token steps.
class Decoder {
 public:
  static std::unique_ptr<Decoder> create(const ModelConfig& c, Backend* backend,
                                         WeightProvider* weights, int steps) {
    std::unique_ptr<Decoder> d(new Decoder());
    d->c_ = c;
    d->max_positions_ =
        static_cast<int32_t>(align_up(static_cast<uint64_t>(kPrompt + steps + 1), kBlockSize));
    const int32_t blocks = d->max_positions_ / kBlockSize;
    KvBlockLayout layout{c.num_layers, kBlockSize, c.num_kv_heads, c.head_dim, c.dtype};
    auto pool = KvPool::create(backend, layout, blocks);
    TS_CHECK(pool.is_ok()) << pool.status().to_string();
    d->pool_ = std::move(pool).value();
    auto model = Model::create(c, backend, weights, kPrompt, 1, d->max_positions_);
    TS_CHECK(model.is_ok()) << model.status().to_string();
    d->model_ = std::move(model).value();
    for (int32_t b = 0; b < blocks; ++b) d->table_.push_back(b);
    return d;
  }

  // Starts again at position 0 with the prompt.
  void prefill() {
    tokens_.clear();
    for (int32_t i = 0; i < kPrompt; ++i) tokens_.push_back((i * 7919 + 13) % c_.vocab_size);
    done_ = 0;
    step();
  }
  // One forward over the tokens not yet in the cache; appends the greedy token.
  void step() {
    std::vector<int32_t> ids, positions, slots;
    for (int32_t p = done_; p < static_cast<int32_t>(tokens_.size()); ++p) {
      ids.push_back(tokens_[static_cast<size_t>(p)]);
      positions.push_back(p);
      slots.push_back(p);  // block b is physical block b
    }
    const int32_t n = static_cast<int32_t>(ids.size());
    const int32_t seq_len = static_cast<int32_t>(tokens_.size());
    TS_CHECK(seq_len < max_positions_) << "too many steps";
    std::vector<int32_t> query_start = {0, n}, seq_lens = {seq_len}, rows = {n - 1};
    ForwardBatch fb;
    fb.token_ids = ids.data();
    fb.positions = positions.data();
    fb.attn.num_seqs = 1;
    fb.attn.num_tokens = n;
    fb.attn.query_start = query_start.data();
    fb.attn.seq_lens = seq_lens.data();
    fb.attn.block_tables = table_.data();
    fb.attn.max_blocks_per_seq = static_cast<int32_t>(table_.size());
    fb.attn.slot_mapping = slots.data();
    fb.logit_rows = rows.data();
    fb.num_logit_rows = 1;
    auto logits = model_->forward(fb, pool_->view());
    TS_CHECK(logits.is_ok()) << logits.status().to_string();
    const float* l = logits.value().ptr<float>();
    tokens_.push_back(static_cast<int32_t>(std::max_element(l, l + c_.vocab_size) - l));
    done_ = seq_len;
  }

 private:
  Decoder() = default;
  ModelConfig c_;
  int32_t max_positions_ = 0;
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> table_, tokens_;
  int32_t done_ = 0;
};

// Per-step figures of one configuration, medians over all measured steps.
struct StepFigures {
  double step = 0, stall = 0, bytes = 0;
};

StepFigures decode_steps(Decoder& d, WeightStreamer* s, int repeats, int steps) {
  std::vector<double> step_t, stall_t, bytes;
  for (int r = 0; r < repeats + 1; ++r) {
    d.prefill();
    for (int i = 0; i < steps; ++i) {
      if (s != nullptr) s->reset_stats();
      const auto t0 = Clock::now();
      d.step();
      const double t = seconds_since(t0);
      if (r == 0) continue;  // warm-up
      step_t.push_back(t);
      if (s != nullptr) {
        stall_t.push_back(s->stats().stall_seconds);
        bytes.push_back(static_cast<double>(s->stats().host_bytes + s->stats().disk_bytes));
      }
    }
  }
  StepFigures f;
  f.step = median(step_t);
  if (s != nullptr) {
    f.stall = median(stall_t);
    f.bytes = median(bytes);
  }
  return f;
}

// One step's streamed units moved through the ring with no compute: acquire and release every
// unit in order. Median seconds per pass.
double transfer_only(WeightStreamer& s, int repeats) {
  std::vector<double> t;
  for (int r = 0; r < repeats + 2; ++r) {
    const auto t0 = Clock::now();
    for (int32_t u = 0; u < s.num_units(); ++u) {
      auto w = s.acquire(u);
      TS_CHECK(w.is_ok()) << w.status().to_string();
      s.release(u);
    }
    if (r >= 2) t.push_back(seconds_since(t0));
  }
  return median(t);
}

double gib_of(uint64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kGiB); }

std::string ms(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", s * 1e3);
  return buf;
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string host_part(const Args& a, const ModelConfig& c, Backend* backend,
                      const ResolvedWeights& w) {
  std::string out;
  const int half = c.num_layers / 2;
  const uint64_t layer_bytes = w.unit_bytes(layer_unit(0));
  double compute = 0;
  {
    auto weights = load_weights(c, a.config_dir, LoadFormat::kDummy, backend);
    TS_CHECK(weights.is_ok()) << weights.status().to_string();
    auto d = Decoder::create(c, backend, weights.value().get(), a.steps);
    compute = decode_steps(*d, nullptr, a.repeats, a.steps).step;
  }
  // On the CPU backend the device and host tiers are the same DRAM: the copies (a read and a
  // write of every streamed byte) share its bandwidth with the compute's weight reads, so the
  // step can be no faster than all those bytes over the read bandwidth.
  const uint64_t decode_bytes = bench::step_cost(c, w).decode_bytes;
  bench::ReadBandwidth read_bandwidth(a.threads > 0 ? a.threads : Topology().num_cores());
  std::vector<double> bws;
  for (int r = 0; r < 3; ++r) bws.push_back(read_bandwidth.measure());
  const double dram_bw = median(bws);
  out += "### (a) " + std::to_string(half) + " of " + std::to_string(c.num_layers) +
         " layers streamed from the host tier (" + format_bytes(half * layer_bytes) +
         " per step)\n\n"
         "compute = the same decode step with every weight resident; transfer = the step's "
         "streamed units moved through the ring alone; overlap efficiency = max(compute, "
         "transfer) / step (bound 1; target >= 0.9 at depth 2). Shared-DRAM bound = (weight "
         "bytes the decode step reads + 2 x streamed bytes) / DRAM read bandwidth (" +
         fixed(dram_bw / 1e9, 1) +
         " GB/s measured here), the least step time when compute and "
         "copies share one memory, as on the CPU backend.\n\n"
         "| depth | step ms | compute ms | transfer ms | stall ms | step - stall ms | copy GB/s "
         "| overlap efficiency | (c + t) / step | shared-DRAM bound ms | bound / step |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (int32_t depth : {1, 2, 3}) {
    WeightTierOptions o;
    o.prefetch_depth = depth;
    o.cpu_offload_gb = gib_of(half * layer_bytes);
    o.topology = nullptr;
    auto loaded = load_tiered_weights(c, a.config_dir, LoadFormat::kDummy, backend, o);
    TS_CHECK(loaded.is_ok()) << loaded.status().to_string();
    auto* s = dynamic_cast<WeightStreamer*>(loaded.value().provider.get());
    TS_CHECK(s != nullptr) << "nothing streamed";
    const double transfer = transfer_only(*s, a.repeats);
    auto d = Decoder::create(c, backend, s, a.steps);
    const StepFigures f = decode_steps(*d, s, a.repeats, a.steps);
    const double eff = std::max(compute, transfer) / f.step;
    const double dram_bound = (static_cast<double>(decode_bytes) + 2.0 * f.bytes) / dram_bw;
    out += "| " + std::to_string(depth) + " | " + ms(f.step) + " | " + ms(compute) + " | " +
           ms(transfer) + " | " + ms(f.stall) + " | " + ms(f.step - f.stall) + " | " +
           fixed(f.bytes / transfer / 1e9, 2) + " | " + fixed(eff, 3) + " | " +
           fixed((compute + transfer) / f.step, 3) + " | " + ms(dram_bound) + " | " +
           fixed(dram_bound / f.step, 3) + " |\n";
    std::fprintf(stderr, "depth %d: step %.2f ms, efficiency %.3f\n", depth, f.step * 1e3, eff);
  }
  return out + "\n";
}

// One row of part (b): decode with every streamed unit on disk at prefetch `depth`.
std::string disk_row(const Args& a, const ModelConfig& c, Backend* backend, uint64_t total,
                     int32_t depth, std::string* header) {
  // The smallest budget at or above half the model that the planner accepts.
  Result<LoadedWeights> loaded = internal_error("not tried");
  uint64_t budget = total / 2;
  double load_seconds = 0;
  for (; budget <= total; budget += total / 64) {
    WeightTierOptions o;
    o.device_budget = budget;
    o.prefetch_depth = depth;
    o.cpu_offload_gb = 0.0;
    o.offload_dir = a.offload_dir;
    const auto t0 = Clock::now();
    loaded = load_tiered_weights(c, a.config_dir, LoadFormat::kDummy, backend, o);
    load_seconds = seconds_since(t0);
    if (loaded.is_ok() || loaded.status().code() != StatusCode::kResourceExhausted) break;
  }
  TS_CHECK(loaded.is_ok()) << loaded.status().to_string();
  const Placement& p = loaded.value().placement;
  auto* s = dynamic_cast<WeightStreamer*>(loaded.value().provider.get());
  TS_CHECK(s != nullptr) << "nothing streamed";
  auto d = Decoder::create(c, backend, s, a.steps);
  const StepFigures f = decode_steps(*d, s, a.repeats, a.steps);
  const double tok_s = 1.0 / f.step;
  if (header->empty()) {
    *header = "placement at depth " + std::to_string(depth) + ": " + p.report() + "\n\n" +
              "disk reads: " + (s->disk_direct_io() ? "O_DIRECT" : "buffered (fallback)") +
              "; the one-time copy of " + format_bytes(p.disk_bytes) + " to --offload-dir took " +
              fixed(load_seconds, 1) + " s at start-up (weights generated and written)\n\n";
  }
  std::string row = "| " + std::to_string(depth) + " | " + format_bytes(budget) + " (" +
                    fixed(static_cast<double>(total) / static_cast<double>(budget), 2) + "x) | " +
                    std::to_string(p.num_streamed()) + " | " +
                    format_bytes(static_cast<uint64_t>(f.bytes)) + " | " + ms(f.step) + " | " +
                    ms(f.stall) + " | " + fixed(f.bytes / f.step / 1e9, 3) + " | " +
                    fixed(tok_s, 3) + " | ";
  if (a.disk_read_bw > 0) {
    const double bound = a.disk_read_bw / f.bytes;
    row += fixed(bound, 3) + " | " + fixed(100.0 * tok_s / bound, 1) + "% |\n";
    std::fprintf(stderr, "disk depth %d: %.3f tok/s, bound %.3f, ratio %.1f%%\n", depth, tok_s,
                 bound, 100.0 * tok_s / bound);
  } else {
    row += "- | - |\n";
  }
  return row;
}

std::string disk_part(const Args& a, const ModelConfig& c, Backend* backend,
                      const ResolvedWeights& w) {
  std::string header, rows;
  for (int32_t depth : a.disk_depths)
    rows += disk_row(a, c, backend, w.total_bytes(), depth, &header);
  return "### (b) about half the model in the device tier, the rest streamed from disk\n\n" +
         header + "disk bound = disk read bandwidth (" +
         (a.disk_read_bw > 0 ? fixed(a.disk_read_bw / 1e9, 3) + " GB/s, the best measured reader"
                             : "unknown") +
         ") / bytes streamed per token.\n\n"
         "| depth | device budget (model / budget) | units on disk | streamed per token | step ms "
         "| stall ms | disk GB/s in decode | decode tok/s | disk bound tok/s | ratio |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n" +
         rows + "\n";
}

int run(const Args& a) {
  auto config = load_model_config(a.config_dir);
  if (!config.is_ok()) {
    std::fprintf(stderr, "error: %s\n", config.status().to_string().c_str());
    return 1;
  }
  const ModelConfig& c = config.value();
  BackendOptions bo;
  bo.num_threads = a.threads;
  auto backend = create_backend(bo);
  TS_CHECK(backend.is_ok()) << backend.status().to_string();
  auto w = resolve_weights(c, a.config_dir, LoadFormat::kDummy, backend.value().get(), 0);
  TS_CHECK(w.is_ok()) << w.status().to_string();
  std::string out = "model: " + c.architecture_name + " (" + std::string(dtype_name(c.dtype)) +
                    ", " + std::to_string(c.num_layers) + " layers, dummy weights, " +
                    format_bytes(w.value().total_bytes()) + " in the device layout); " +
                    std::to_string(a.threads > 0 ? a.threads : Topology().num_cores()) +
                    " compute threads, 1 copy thread; medians of " + std::to_string(a.repeats) +
                    " x " + std::to_string(a.steps) + " decode steps\n\n";
  if (a.host) out += host_part(a, c, backend.value().get(), w.value());
  if (a.disk) out += disk_part(a, c, backend.value().get(), w.value());
  std::printf("%s", out.c_str());
  if (!a.markdown.empty()) std::ofstream(a.markdown, std::ios::app) << out;
  return 0;
}

}  // namespace
}  // namespace tierserve

int main(int argc, char** argv) {
  tierserve::Args a;
  tierserve::set_log_level(tierserve::LogLevel::kWarning);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--offload-dir") {
      a.offload_dir = next();
    } else if (arg == "--disk-read-bw") {
      a.disk_read_bw = std::atof(next().c_str());
    } else if (arg == "--threads") {
      a.threads = std::atoi(next().c_str());
    } else if (arg == "--repeats") {
      a.repeats = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--steps") {
      a.steps = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--parts") {
      const std::string parts = next();
      a.host = parts.find("host") != std::string::npos;
      a.disk = parts.find("disk") != std::string::npos;
    } else if (arg == "--disk-depths") {
      a.disk_depths.clear();
      const std::string list = next();
      for (size_t p = 0; p < list.size();) {
        size_t q = list.find(',', p);
        if (q == std::string::npos) q = list.size();
        a.disk_depths.push_back(std::max(1, std::atoi(list.substr(p, q - p).c_str())));
        p = q + 1;
      }
    } else if (arg == "--markdown") {
      a.markdown = next();
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "error: unknown flag %s\n", arg.c_str());
      return 2;
    } else {
      a.config_dir = arg;
    }
  }
  if (a.config_dir.empty() || (a.disk && a.offload_dir.empty())) {
    std::fprintf(
        stderr,
        "usage: stream_bench CONFIG_DIR --offload-dir DIR [--disk-read-bw BYTES_PER_S] "
        "[--threads N] [--repeats R] [--steps N] [--parts host,disk] [--disk-depths 2,4,8] "
        "[--markdown FILE]\n");
    return 2;
  }
  return tierserve::run(a);
}

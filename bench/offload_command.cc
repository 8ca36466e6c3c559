#include "bench/offload_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "bench/bench_util.h"
#include "bench/link_bounds.h"
#include "bench/offline_run.h"
#include "bench/plot.h"
#include "bench/report.h"
#include "common/units.h"
#include "engine/model_weights.h"
#include "kernels/backend_registry.h"

namespace tierserve::bench {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

struct Point {
  double cpu_gb = 0, disk_gb = 0;
  int32_t depth = 2, batch = 1;
  bool ok = false;
  std::string error;  // why the point could not run (it does not fit, ...)
  double tokens_per_s = 0, ttft_ms = 0, step_ms = 0;
  double host_mib = 0, disk_mib = 0, stall_ms = 0;  // per decode step
  double host_gbps = 0, disk_gbps = 0;              // achieved: bytes per step / step time
  double transfer_ms = 0;                           // streamed bytes / link bounds
  double overlap = 0;                               // max(compute, transfer) / step; 0 unknown
  double offloaded_gb() const { return cpu_gb + disk_gb; }
};

std::string gib(double g) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g GiB", g);
  return buf;
}

Status run(OffloadSweepOptions& s) {
  OfflineOptions& o = s.run;
  TS_RETURN_IF_ERROR(validate_offline(o));
  for (double g : s.cpu_offload_gb) {
    if (!(g >= 0)) return invalid_argument("--cpu-offload-gb-sweep values must be >= 0");
  }
  for (double g : s.disk_offload_gb) {
    if (!(g >= 0)) return invalid_argument("--disk-offload-gb-sweep values must be >= 0");
    if (g > 0 && o.engine.offload_dir.empty()) {
      return invalid_argument("--disk-offload-gb-sweep needs --offload-dir");
    }
  }
  for (int32_t d : s.prefetch_depths) {
    if (d < 1 || d > 64) return invalid_argument("--prefetch-depth-sweep values must be 1..64");
  }

  // The link bounds.
  TS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, create_backend(o.engine.backend));
  TS_ASSIGN_OR_RETURN(const double host_bw, measure_copy_bandwidth(backend.get()));
  backend.reset();
  double disk_bw = 0;
  std::string disk_line = "not measured";
  const bool any_disk = std::any_of(s.disk_offload_gb.begin(), s.disk_offload_gb.end(),
                                    [](double g) { return g > 0; });
  if (any_disk) {
    Result<DiskReadBandwidth> bw = disk_read_bandwidth(o.engine.offload_dir);
    if (bw.is_ok()) {
      disk_bw = bw->best();
      char buf[160];
      std::snprintf(buf, sizeof(buf), "%.2f GB/s (the better of fio %.2f and DiskStore %.2f)",
                    disk_bw / 1e9, bw->fio / 1e9, bw->disk_store / 1e9);
      disk_line = buf;
    } else {
      disk_line = "not measured (" + bw.status().message() + ")";
    }
  }
  std::fprintf(stderr, "bench offload: link bounds: host-to-device copy %.2f GB/s; disk read %s\n",
               host_bw / 1e9, disk_line.c_str());

  // The points: every combination; without offload the depth does not matter (one point).
  std::vector<Point> points;
  for (int32_t batch : o.batch_sizes) {
    for (double cpu : s.cpu_offload_gb) {
      for (double disk : s.disk_offload_gb) {
        for (int32_t depth : s.prefetch_depths) {
          if (cpu + disk == 0 && depth != s.prefetch_depths.front()) continue;
          Point p;
          p.cpu_gb = cpu;
          p.disk_gb = disk;
          p.depth = depth;
          p.batch = batch;
          points.push_back(p);
        }
      }
    }
  }
  std::map<int32_t, double> compute_ms;  // batch -> all-resident step time
  std::optional<ModelConfig> config;     // of the first engine that could be created
  for (Point& p : points) {
    EngineOptions e = o.engine;
    e.cpu_offload_gb = p.cpu_gb;
    e.disk_offload_gb = p.disk_gb;
    e.offload_prefetch_depth = p.depth;
    e.max_num_seqs = p.batch;
    e.max_num_batched_tokens = std::max(e.max_num_batched_tokens, p.batch);
    if (e.max_model_len == 0) e.max_model_len = o.shared_prefix_len + o.input_len + o.output_len;
    std::fprintf(stderr, "bench offload: host %s, disk %s, depth %d, batch %d\n",
                 gib(p.cpu_gb).c_str(), gib(p.disk_gb).c_str(), p.depth, p.batch);
    auto engine = LlmEngine::create(o.model_dir, e);
    if (!engine.is_ok()) {
      p.error = engine.status().message();
      continue;
    }
    if (!config) config = engine.value()->config();
    std::vector<double> tps, ttft, step, host, disk, stall;
    for (int32_t r = 0; r <= o.repeats; ++r) {
      DecodeWorkload w{p.batch, o.input_len, o.output_len, o.shared_prefix_len,
                       static_cast<uint32_t>(r)};
      const DecodeRun run = run_decode(*engine.value(), w);
      if (r == 0) continue;
      tps.push_back(run.decode_tokens_per_s());
      ttft.push_back(run.mean_ttft_s() * 1e3);
      step.push_back(run.step_seconds() * 1e3);
      host.push_back(run.host_bytes_per_step);
      disk.push_back(run.disk_bytes_per_step);
      stall.push_back(run.stall_seconds_per_step * 1e3);
    }
    p.ok = true;
    p.tokens_per_s = median(tps);
    p.ttft_ms = median(ttft);
    p.step_ms = median(step);
    p.host_mib = median(host) / static_cast<double>(kMiB);
    p.disk_mib = median(disk) / static_cast<double>(kMiB);
    p.stall_ms = median(stall);
    p.host_gbps = median(host) / (p.step_ms / 1e3) / 1e9;
    p.disk_gbps = median(disk) / (p.step_ms / 1e3) / 1e9;
    p.transfer_ms = median(host) / host_bw * 1e3 + (disk_bw > 0 ? median(disk) / disk_bw * 1e3 : 0);
    if (p.offloaded_gb() == 0) compute_ms[p.batch] = p.step_ms;
  }
  // A batch without an all-resident point (the model does not fit the device): its compute
  // time is estimated from GEMM throughput, 2 FLOPs per decoder parameter per token.
  std::string compute_note = "compute = the all-resident step at the same batch";
  for (int32_t batch : o.batch_sizes) {
    if (compute_ms.count(batch) > 0 || !config) continue;
    TS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, create_backend(o.engine.backend));
    TS_ASSIGN_OR_RETURN(const ResolvedWeights weights,
                        resolve_weights(*config, o.model_dir, o.engine.load_format, b.get(), 0));
    const double flops = measure_gemm_flops(b.get(), *config, batch, 3, weights);
    if (flops <= 0) continue;
    const StepCost cost = step_cost(*config, weights);
    compute_ms[batch] = 2.0 * cost.decoder_params * batch / flops * 1e3;
    compute_note =
        "compute = the all-resident step where one ran, else the decoder's GEMMs at the measured "
        "GEMM throughput";
  }
  for (Point& p : points) {
    auto c = compute_ms.find(p.batch);
    if (p.ok && c != compute_ms.end()) p.overlap = std::max(c->second, p.transfer_ms) / p.step_ms;
  }

  // The table, the recommendation, the files.
  std::printf(
      "| host GiB | disk GiB | depth | batch | decode tok/s | mean TTFT ms | step ms | host "
      "MiB/step "
      "| disk MiB/step | stall ms/step | host GB/s (bound %.2f) | disk GB/s (bound %s) | overlap "
      "efficiency |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      host_bw / 1e9, disk_bw > 0 ? std::to_string(disk_bw / 1e9).substr(0, 4).c_str() : "-");
  Json rows = Json::array();
  for (const Point& p : points) {
    if (!p.ok) {
      std::printf("| %g | %g | %d | %d | does not run: %s |\n", p.cpu_gb, p.disk_gb, p.depth,
                  p.batch, p.error.c_str());
      rows.push_back({{"cpu_offload_gb", p.cpu_gb},
                      {"disk_offload_gb", p.disk_gb},
                      {"prefetch_depth", p.depth},
                      {"batch", p.batch},
                      {"error", p.error}});
      continue;
    }
    char overlap[32] = "-";
    if (p.overlap > 0) std::snprintf(overlap, sizeof(overlap), "%.2f", p.overlap);
    std::printf(
        "| %g | %g | %d | %d | %.2f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f (%.0f%%) | %.2f (%s) "
        "| "
        "%s |\n",
        p.cpu_gb, p.disk_gb, p.depth, p.batch, p.tokens_per_s, p.ttft_ms, p.step_ms, p.host_mib,
        p.disk_mib, p.stall_ms, p.host_gbps, 100 * p.host_gbps * 1e9 / host_bw, p.disk_gbps,
        disk_bw > 0
            ? (std::to_string(static_cast<int>(100 * p.disk_gbps * 1e9 / disk_bw)) + "%").c_str()
            : "-",
        overlap);
    rows.push_back({{"cpu_offload_gb", p.cpu_gb},
                    {"disk_offload_gb", p.disk_gb},
                    {"prefetch_depth", p.depth},
                    {"batch", p.batch},
                    {"decode_tokens_per_s", p.tokens_per_s},
                    {"mean_ttft_ms", p.ttft_ms},
                    {"step_ms", p.step_ms},
                    {"host_mib_per_step", p.host_mib},
                    {"disk_mib_per_step", p.disk_mib},
                    {"stall_ms_per_step", p.stall_ms},
                    {"host_gbps", p.host_gbps},
                    {"disk_gbps", p.disk_gbps},
                    {"transfer_ms", p.transfer_ms},
                    {"overlap_efficiency", p.overlap}});
  }
  const std::string device = o.engine.device_memory_gb > 0
                                 ? gib(o.engine.device_memory_gb) + " of device memory"
                                 : "this device's memory";
  Json recommendations = Json::array();
  std::printf(
      "\noverlap efficiency = max(compute, transfer) / step; %s; transfer = streamed bytes "
      "at the link bounds\n\n",
      compute_note.c_str());
  for (int32_t batch : o.batch_sizes) {
    // The fastest point; within 5% of it (run-to-run noise), the one that offloads least, then
    // the shallowest ring: fewer moving parts for the same speed.
    double fastest = 0;
    for (const Point& p : points) {
      if (p.ok && p.batch == batch) fastest = std::max(fastest, p.tokens_per_s);
    }
    const Point* best = nullptr;
    for (const Point& p : points) {
      if (!p.ok || p.batch != batch || p.tokens_per_s < 0.95 * fastest) continue;
      if (best == nullptr || p.offloaded_gb() < best->offloaded_gb() ||
          (p.offloaded_gb() == best->offloaded_gb() && p.depth < best->depth)) {
        best = &p;
      }
    }
    if (best == nullptr) {
      std::printf("batch %d: no point of the sweep runs\n", batch);
      continue;
    }
    std::string what =
        best->offloaded_gb() == 0
            ? "keep every weight resident"
            : "offload " + gib(best->cpu_gb) + " to host" +
                  (best->disk_gb > 0 ? " and " + gib(best->disk_gb) + " to disk" : "") +
                  " at prefetch depth " + std::to_string(best->depth);
    char line[512];
    std::snprintf(line, sizeof(line), "with %s, %s for %.2f tok/s at batch %d", device.c_str(),
                  what.c_str(), best->tokens_per_s, batch);
    std::printf("recommendation: %s\n", line);
    recommendations.push_back(line);
  }
  if (!o.result_json.empty()) {
    TS_RETURN_IF_ERROR(write_result_json(o.result_json, {{"host_copy_bytes_per_s", host_bw},
                                                         {"disk_read_bytes_per_s", disk_bw},
                                                         {"points", rows},
                                                         {"recommendations", recommendations}}));
  }
  if (!s.plot_dir.empty()) {
    const fs::path dir = s.plot_dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return io_error("--plot " + dir.string() + ": " + ec.message());
    std::ofstream d(dir / "offload_sweep.dat");
    std::ofstream gp(dir / "offload_sweep.gp");
    gp << "set terminal pngcairo size 900,540\nset grid\nset key outside right\n"
          "set output 'offload_sweep.png'\nset title 'Decode throughput against offloaded "
          "weights'\nset xlabel 'offloaded GiB (host + disk)'\nset ylabel 'decode tokens/s'\n"
          "plot ";
    int series = 0;
    for (int32_t batch : o.batch_sizes) {
      for (int32_t depth : s.prefetch_depths) {
        std::vector<const Point*> ps;
        for (const Point& p : points) {
          if (p.ok && p.batch == batch && (p.depth == depth || p.offloaded_gb() == 0)) {
            ps.push_back(&p);
          }
        }
        if (ps.empty()) continue;
        std::sort(ps.begin(), ps.end(), [](const Point* a, const Point* b) {
          return a->offloaded_gb() < b->offloaded_gb();
        });
        d << "# batch " << batch << " depth " << depth << "\n";
        for (const Point* p : ps) d << p->offloaded_gb() << ' ' << p->tokens_per_s << '\n';
        d << "\n\n";
        gp << (series > 0 ? ", \\\n     " : "") << "'offload_sweep.dat' index " << series
           << " using 1:2 with linespoints title 'batch " << batch << ", depth " << depth << "'";
        ++series;
      }
    }
    gp << "\n";
    d.close();
    gp.close();
    if (series > 0) TS_RETURN_IF_ERROR(run_gnuplot(dir / "offload_sweep.gp"));
  }
  return Status::ok();
}

}  // namespace

CLI::App* add_bench_offload_command(CLI::App* bench, OffloadSweepOptions& o) {
  CLI::App* cmd = bench->add_subcommand(
      "offload", "Offload tuning: sweep offloaded GiB, prefetch depth and batch size");
  add_offline_flags(cmd, o.run);
  cmd->add_option("--cpu-offload-gb-sweep", o.cpu_offload_gb, "GiB of weights in the host tier")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--disk-offload-gb-sweep", o.disk_offload_gb,
                  "GiB of weights streamed from disk (needs --offload-dir)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--prefetch-depth-sweep", o.prefetch_depths, "--offload-prefetch-depth values")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--plot", o.plot_dir, "Write offload_sweep.png here (needs gnuplot)");
  return cmd;
}

int run_bench_offload(OffloadSweepOptions& o) { return exit_status(run(o)); }

}  // namespace tierserve::bench

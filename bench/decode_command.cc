#include "bench/decode_command.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "bench/link_bounds.h"
#include "bench/offline_run.h"
#include "bench/report.h"
#include "common/topology.h"
#include "common/units.h"
#include "engine/model_weights.h"
#include "server/engine_flags.h"

namespace tierserve::bench {

using Json = nlohmann::json;

void add_offline_flags(CLI::App* cmd, OfflineOptions& o) {
  cmd->add_option("model", o.model_dir, "Model directory (config.json; safetensors unless dummy)")
      ->required();
  add_engine_flags(cmd, o.engine);
  cmd->add_option("--load-format", o.load_format, "auto (safetensors) or dummy (random weights)")
      ->capture_default_str();
  cmd->add_option("--batch-sizes", o.batch_sizes, "Requests submitted at once, per run")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--input-len", o.input_len)->capture_default_str();
  cmd->add_option("--output-len", o.output_len)->capture_default_str();
  cmd->add_option("--shared-prefix-len", o.shared_prefix_len,
                  "Prompts share a prefix of this many tokens (prefix caching)")
      ->capture_default_str();
  cmd->add_option("--repeats", o.repeats, "Runs per point (medians), after one warm-up")
      ->capture_default_str();
  cmd->add_option("--result-json", o.result_json, "Write every figure here");
}

Status validate_offline(OfflineOptions& o) {
  if (o.load_format != "auto" && o.load_format != "dummy") {
    return invalid_argument("--load-format must be auto or dummy, got '" + o.load_format + "'");
  }
  if (o.load_format == "dummy") o.engine.load_format = LoadFormat::kDummy;
  if (o.batch_sizes.empty()) return invalid_argument("--batch-sizes is empty");
  for (int32_t b : o.batch_sizes) {
    if (b < 1) return invalid_argument("--batch-sizes must be >= 1");
  }
  if (o.input_len < 1 || o.output_len < 2 || o.shared_prefix_len < 0 || o.repeats < 1) {
    return invalid_argument(
        "--input-len >= 1, --output-len >= 2, --shared-prefix-len >= 0 and --repeats >= 1");
  }
  return Status::ok();
}

CLI::App* add_bench_decode_command(CLI::App* bench, OfflineOptions& o) {
  CLI::App* cmd = bench->add_subcommand(
      "decode", "Offline engine benchmark: decode tokens/s against the memory-bandwidth bound");
  add_offline_flags(cmd, o);
  return cmd;
}

namespace {

Status run(OfflineOptions& o) {
  TS_RETURN_IF_ERROR(validate_offline(o));
  const int threads =
      o.engine.backend.num_threads > 0 ? o.engine.backend.num_threads : Topology().num_cores();
  ReadBandwidth bandwidth(threads);
  std::printf(
      "| batch | decode tok/s | memory bound tok/s | ratio | compute bound tok/s | ratio | mean "
      "TTFT ms | step ms | streamed MiB/step | stall ms/step | prefix hit tokens "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  Json rows = Json::array();
  std::string model_line;
  for (int32_t batch : o.batch_sizes) {
    EngineOptions e = o.engine;
    e.max_num_seqs = batch;
    e.max_num_batched_tokens = std::max(e.max_num_batched_tokens, batch);
    if (e.max_model_len == 0) e.max_model_len = o.shared_prefix_len + o.input_len + o.output_len;
    auto engine_or = LlmEngine::create(o.model_dir, e);
    if (!engine_or.is_ok()) return engine_or.status();
    LlmEngine& engine = *engine_or.value();
    const ModelConfig& c = engine.config();
    TS_ASSIGN_OR_RETURN(const ResolvedWeights weights,
                        resolve_weights(c, o.model_dir, e.load_format, &engine.backend(), 0));
    const StepCost cost = step_cost(c, weights);
    model_line = c.architecture_name + " (" + std::string(dtype_name(c.dtype)) + ", " +
                 std::to_string(c.num_layers) + " layers, weights " +
                 format_bytes(engine.weight_bytes()) + ")";
    std::vector<double> tps, bound, ttft, step, streamed, stall, hits;
    // The compute bound: GEMM throughput at m = batch over the decoder's own projections, and
    // 2 FLOPs per parameter per token (attention and the lm_head aside).
    const double flops = measure_gemm_flops(&engine.backend(), c, batch, 3, weights);
    const double compute_bound = flops > 0 ? flops / (2.0 * cost.decoder_params) : 0;
    for (int32_t r = 0; r <= o.repeats; ++r) {
      // The host's read bandwidth on the CPU backend; the GPU's memory bandwidth on a GPU.
      double bw = 0;
      if (engine.backend().device() == DeviceKind::kCpu) {
        bw = bandwidth.measure();
      } else {
        TS_ASSIGN_OR_RETURN(bw, measure_device_bandwidth(&engine.backend()));
      }
      DecodeWorkload w{batch, o.input_len, o.output_len, o.shared_prefix_len,
                       static_cast<uint32_t>(r)};
      const DecodeRun run = run_decode(engine, w);
      if (r == 0) continue;  // warm-up
      tps.push_back(run.decode_tokens_per_s());
      bound.push_back(run.mean_decode_batch * bw / static_cast<double>(cost.decode_bytes));
      ttft.push_back(run.mean_ttft_s() * 1e3);
      step.push_back(run.step_seconds() * 1e3);
      streamed.push_back(run.streamed_bytes_per_step / static_cast<double>(kMiB));
      stall.push_back(run.stall_seconds_per_step * 1e3);
      hits.push_back(static_cast<double>(run.prefix_hit_tokens));
    }
    const double ratio = median(tps) / median(bound);
    const double compute_ratio = compute_bound > 0 ? median(tps) / compute_bound : 0;
    std::printf(
        "| %d | %.1f | %.1f | %.1f%% | %.1f | %.1f%% | %.1f | %.2f | %.1f | %.2f | %.0f |\n", batch,
        median(tps), median(bound), 100 * ratio, compute_bound, 100 * compute_ratio, median(ttft),
        median(step), median(streamed), median(stall), median(hits));
    std::fflush(stdout);
    rows.push_back({{"batch", batch},
                    {"decode_tokens_per_s", median(tps)},
                    {"memory_bound_tokens_per_s", median(bound)},
                    {"ratio_to_memory_bound", ratio},
                    {"compute_bound_tokens_per_s", compute_bound},
                    {"ratio_to_compute_bound", compute_ratio},
                    {"mean_ttft_ms", median(ttft)},
                    {"step_ms", median(step)},
                    {"streamed_mib_per_step", median(streamed)},
                    {"stall_ms_per_step", median(stall)},
                    {"prefix_hit_tokens", median(hits)}});
  }
  std::printf(
      "\nmodel: %s; input %d (+ %d shared) and output %d tokens per request; %d threads; medians "
      "of %d runs; memory bound = batch x read bandwidth / weight bytes read per step; compute "
      "bound = GEMM FLOP/s at m = batch / (2 x decoder parameters)\n",
      model_line.c_str(), o.input_len, o.shared_prefix_len, o.output_len, threads, o.repeats);
  if (!o.result_json.empty()) {
    TS_RETURN_IF_ERROR(write_result_json(o.result_json, {{"model", model_line}, {"rows", rows}}));
  }
  return Status::ok();
}

}  // namespace

int run_bench_decode(OfflineOptions& o) { return exit_status(run(o)); }

}  // namespace tierserve::bench

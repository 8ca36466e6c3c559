// CPU decode and prefill throughput on a --load-format dummy model of a real shape, each figure
// next to its physical bound:
// - decode tokens/s vs the memory-bandwidth bound: read bandwidth (measured here, same threads)
//   divided by the weight bytes one decode step reads;
// - prefill tokens/s vs the same memory bound and vs a compute bound: 2 x decoder parameters
//   FLOPs per token at the GEMM throughput measured here on the model's own projection shapes
//   (attention FLOPs are not counted, so the ratio slightly understates efficiency).
// Medians over repeated runs; each ratio is the median of ratios taken within one run, with the
// bound measured right next to the figure. Usage:
//   cpu_inference_bench MODEL_DIR [--threads N] [--repeats R] [--decode-tokens N]
//                       [--prefill-tokens N] [--markdown FILE]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "common/topology.h"
#include "common/units.h"
#include "engine/llm_engine.h"
#include "engine/model_weights.h"

namespace tierserve {
namespace {

using bench::Clock;
using bench::median;
using bench::ReadBandwidth;
using bench::seconds_since;

struct Args {
  std::string model_dir;
  int threads = 0;
  int repeats = 5;
  int decode_tokens = 32;
  int prefill_tokens = 256;
  std::string markdown;
};

int run(const Args& a) {
  EngineOptions options;
  options.load_format = LoadFormat::kDummy;
  options.backend.num_threads = a.threads;
  options.max_model_len = a.prefill_tokens + a.decode_tokens + 8;
  options.max_num_batched_tokens = a.prefill_tokens;
  auto engine_or = LlmEngine::create(a.model_dir, options);
  if (!engine_or.is_ok()) {
    std::fprintf(stderr, "error: %s\n", engine_or.status().message().c_str());
    return 1;
  }
  LlmEngine& engine = *engine_or.value();
  const ModelConfig& c = engine.config();
  const int threads = a.threads > 0 ? a.threads : Topology().num_cores();

  auto weights_or = resolve_weights(c, a.model_dir, options.load_format, &engine.backend(), 0);
  if (!weights_or.is_ok()) {
    std::fprintf(stderr, "error: %s\n", weights_or.status().message().c_str());
    return 1;
  }
  const ResolvedWeights& weights = weights_or.value();
  const bench::StepCost cost = bench::step_cost(c, weights);
  const uint64_t step_bytes = cost.decode_bytes;
  const double decoder_params = cost.decoder_params;

  // Bounds are measured in every repeat right next to the figure they bound, and each figure's
  // ratio is taken within its repeat: on a shared machine the bandwidth drifts between repeats.
  ReadBandwidth read_bandwidth(threads);
  auto backend = create_backend(options.backend);

  std::vector<int32_t> short_prompt(16), long_prompt(static_cast<size_t>(a.prefill_tokens));
  for (size_t i = 0; i < long_prompt.size(); ++i) {
    long_prompt[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(c.vocab_size));
  }
  std::copy(long_prompt.begin(), long_prompt.begin() + 16, short_prompt.begin());
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;

  std::vector<double> decode_rates, prefill_rates, bandwidths, gemm_rates;
  std::vector<double> decode_ratios, prefill_compute_ratios, prefill_memory_ratios;
  std::fprintf(stderr, "running %d repeats...\n", a.repeats);
  for (int r = 0; r < a.repeats + 1; ++r) {
    // Decode: the time of N more tokens after the same prefill.
    const double bandwidth = read_bandwidth.measure();
    p.max_tokens = 1;
    auto t0 = Clock::now();
    (void)engine.generate(short_prompt, p);
    double t_prefill_only = seconds_since(t0);
    p.max_tokens = 1 + a.decode_tokens;
    t0 = Clock::now();
    (void)engine.generate(short_prompt, p);
    double t_with_decode = seconds_since(t0);
    // Prefill: one step over the long prompt (max_num_batched_tokens = prefill_tokens).
    const double gemm_flops =
        bench::measure_gemm_flops(backend.value().get(), c, a.prefill_tokens, 1, weights);
    p.max_tokens = 1;
    t0 = Clock::now();
    (void)engine.generate(long_prompt, p);
    double t_long = seconds_since(t0);
    if (r == 0) continue;  // warm-up
    const double decode = a.decode_tokens / std::max(t_with_decode - t_prefill_only, 1e-9);
    const double prefill = a.prefill_tokens / t_long;
    const double decode_bound = bandwidth / static_cast<double>(step_bytes);
    decode_rates.push_back(decode);
    prefill_rates.push_back(prefill);
    bandwidths.push_back(bandwidth);
    gemm_rates.push_back(gemm_flops);
    decode_ratios.push_back(decode / decode_bound);
    prefill_compute_ratios.push_back(prefill / (gemm_flops / (2.0 * decoder_params)));
    prefill_memory_ratios.push_back(prefill / (decode_bound * a.prefill_tokens));
  }
  const double decode = median(decode_rates), prefill = median(prefill_rates);
  const double bandwidth = median(bandwidths), gemm_flops = median(gemm_rates);
  const double decode_bound = bandwidth / static_cast<double>(step_bytes);
  const double prefill_mem_bound = decode_bound * a.prefill_tokens;
  const double prefill_compute_bound = gemm_flops / (2.0 * decoder_params);

  char table[4096];
  std::snprintf(table, sizeof(table),
                "| figure | value | bound | ratio |\n"
                "|---|---|---|---|\n"
                "| read bandwidth (%d threads) | %.2f GB/s | - | - |\n"
                "| GEMM, one layer's projections at m=%d | %.1f GFLOP/s | - | - |\n"
                "| weights read per decode step | %s | - | - |\n"
                "| decode, batch 1 | %.2f tok/s | %.2f tok/s (memory) | %.1f%% |\n"
                "| prefill, %d tokens | %.1f tok/s | %.1f tok/s (GEMM compute) | %.1f%% |\n"
                "| prefill, %d tokens | %.1f tok/s | %.1f tok/s (memory) | %.1f%% |\n",
                threads, bandwidth / 1e9, a.prefill_tokens, gemm_flops / 1e9,
                format_bytes(step_bytes).c_str(), decode, decode_bound,
                100.0 * median(decode_ratios), a.prefill_tokens, prefill, prefill_compute_bound,
                100.0 * median(prefill_compute_ratios), a.prefill_tokens, prefill,
                prefill_mem_bound, 100.0 * median(prefill_memory_ratios));
  std::printf(
      "model: %s (%s, %d layers, dummy weights), medians of %d runs (each ratio is the "
      "median of per-run ratios)\n%s",
      c.architecture_name.c_str(), std::string(dtype_name(c.dtype)).c_str(), c.num_layers,
      a.repeats, table);
  if (!a.markdown.empty()) {
    std::ofstream out(a.markdown, std::ios::app);
    out << table;
  }
  return 0;
}

}  // namespace
}  // namespace tierserve

int main(int argc, char** argv) {
  tierserve::Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--threads") {
      a.threads = std::atoi(next().c_str());
    } else if (arg == "--repeats") {
      a.repeats = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--decode-tokens") {
      a.decode_tokens = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--prefill-tokens") {
      a.prefill_tokens = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--markdown") {
      a.markdown = next();
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "error: unknown flag %s\n", arg.c_str());
      return 2;
    } else {
      a.model_dir = arg;
    }
  }
  if (a.model_dir.empty()) {
    std::fprintf(stderr,
                 "usage: cpu_inference_bench MODEL_DIR [--threads N] [--repeats R] "
                 "[--decode-tokens N] [--prefill-tokens N] [--markdown FILE]\n");
    return 2;
  }
  return tierserve::run(a);
}

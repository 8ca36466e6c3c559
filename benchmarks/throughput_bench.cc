// Offline throughput: N requests of a given input and output length submitted at once, run to
// completion by continuous batching. Reports requests/s, output tokens/s, the mean batch size
// reached, and decode tokens/s next to its roofline bound at that batch size: the lesser of the
// memory bound (each decode step reads the weights once: batch x read bandwidth / weight bytes)
// and the compute bound (GEMM FLOP/s measured on the model's shapes / 2 x parameters per token).
// Runs each --batch size (N = batch requests, --max-num-seqs batch) and prints the speed-up of
// decode throughput over the first. Medians over --repeats runs. Usage:
//   throughput_bench MODEL_DIR [--load-format dummy|auto] [--batch-sizes 1,32] [--input-len 128]
//                    [--output-len 128] [--repeats 3] [--threads N] [--deterministic]
//                    [--markdown FILE]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "common/units.h"
#include "engine/llm_engine.h"
#include "engine/model_weights.h"

namespace tierserve {
namespace {

using bench::Clock;
using bench::median;
using bench::seconds_since;

struct Args {
  std::string model_dir;
  LoadFormat load_format = LoadFormat::kDummy;
  std::vector<int> batch_sizes = {1, 32};
  int input_len = 128;
  int output_len = 128;
  int repeats = 3;
  int threads = 0;
  bool deterministic = false;
  std::string markdown;
};

struct RunResult {
  double seconds = 0;            // wall time of the whole run
  double decode_seconds = 0;     // time in steps that only decoded
  int64_t decode_tokens = 0;     // tokens those steps produced
  int64_t output_tokens = 0;     // all generated tokens
  double mean_batch = 0;         // sequences per step
  double mean_decode_batch = 0;  // sequences per decode-only step
};

// Submits `n` requests at once and steps the engine until all finish.
RunResult run_once(LlmEngine& engine, int n, const Args& a, uint32_t seed) {
  std::mt19937 rng(seed);
  const int32_t vocab = engine.config().vocab_size;
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = a.output_len;
  std::vector<std::shared_ptr<RequestStream>> streams;
  const EngineStats before = engine.stats();
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> prompt(static_cast<size_t>(a.input_len));
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
    streams.push_back(engine.add_request(std::move(prompt), p).value());
  }
  RunResult r;
  int64_t decode_steps = 0, decode_seqs = 0;
  for (;;) {
    const EngineStats s0 = engine.stats();
    auto ts = Clock::now();
    if (!engine.step()) break;
    const double dt = seconds_since(ts);
    const EngineStats& s1 = engine.stats();
    const int64_t seqs = s1.scheduled_seqs - s0.scheduled_seqs;
    if (s1.scheduled_tokens - s0.scheduled_tokens == seqs) {  // every sequence decoded one token
      r.decode_seconds += dt;
      r.decode_tokens += seqs;
      ++decode_steps;
      decode_seqs += seqs;
    }
    for (auto& st : streams) {
      while (st->poll()) {
      }
    }
  }
  r.seconds = seconds_since(t0);
  const EngineStats& after = engine.stats();
  r.output_tokens = after.generated_tokens - before.generated_tokens;
  r.mean_batch = static_cast<double>(after.scheduled_seqs - before.scheduled_seqs) /
                 static_cast<double>(std::max<int64_t>(1, after.steps - before.steps));
  r.mean_decode_batch =
      static_cast<double>(decode_seqs) / static_cast<double>(std::max<int64_t>(1, decode_steps));
  return r;
}

int run(const Args& a) {
  std::ostringstream table;
  table << "| batch (requests) | requests/s | output tok/s | mean batch | decode tok/s | decode "
           "bound | ratio | decode speed-up vs batch "
        << a.batch_sizes.front() << " |\n|---|---|---|---|---|---|---|---|\n";
  double first_decode = 0;
  std::string model_line;
  const int threads = a.threads > 0 ? a.threads : Topology().num_cores();
  bench::ReadBandwidth bandwidth(threads);
  for (int batch : a.batch_sizes) {
    EngineOptions o;
    o.load_format = a.load_format;
    o.backend.num_threads = a.threads;
    o.backend.deterministic = a.deterministic;
    o.max_model_len = a.input_len + a.output_len;
    o.max_num_seqs = batch;
    o.max_num_batched_tokens = std::max(512, batch);
    o.enable_prefix_caching = false;  // random prompts share nothing; measure the plain path
    auto engine_or = LlmEngine::create(a.model_dir, o);
    if (!engine_or.is_ok()) {
      std::fprintf(stderr, "error: %s\n", engine_or.status().message().c_str());
      return 1;
    }
    LlmEngine& engine = *engine_or.value();
    const ModelConfig& c = engine.config();
    auto weights_or = resolve_weights(c, a.model_dir, o.load_format, &engine.backend(), 0);
    if (!weights_or.is_ok()) {
      std::fprintf(stderr, "error: %s\n", weights_or.status().message().c_str());
      return 1;
    }
    const ResolvedWeights& weights = weights_or.value();
    const bench::StepCost cost = bench::step_cost(c, weights);
    auto backend = create_backend(o.backend);
    model_line = c.architecture_name + " (" + std::string(dtype_name(c.dtype)) + ", " +
                 std::to_string(c.num_layers) + " layers, weights " +
                 format_bytes(engine.weight_bytes()) + ")";
    std::vector<double> rps, tps, mean_batch, decode, bound, ratio;
    for (int r = 0; r < a.repeats + 1; ++r) {
      const double bw = bandwidth.measure();
      const double flops = bench::measure_gemm_flops(backend.value().get(), c, batch, 1, weights);
      RunResult res = run_once(engine, batch, a, static_cast<uint32_t>(r));
      if (r == 0) continue;  // warm-up
      const double d = static_cast<double>(res.decode_tokens) / res.decode_seconds;
      const double b = std::min(res.mean_decode_batch * bw / static_cast<double>(cost.decode_bytes),
                                flops / (2.0 * cost.decoder_params));
      rps.push_back(batch / res.seconds);
      tps.push_back(static_cast<double>(res.output_tokens) / res.seconds);
      mean_batch.push_back(res.mean_batch);
      decode.push_back(d);
      bound.push_back(b);
      ratio.push_back(d / b);
    }
    if (first_decode == 0) first_decode = median(decode);
    char line[512];
    std::snprintf(line, sizeof line, "| %d | %.3f | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.2fx |\n",
                  batch, median(rps), median(tps), median(mean_batch), median(decode),
                  median(bound), 100.0 * median(ratio), median(decode) / first_decode);
    table << line;
    std::fprintf(stderr, "batch %d done\n", batch);
  }
  char head[512];
  std::snprintf(head, sizeof head,
                "model: %s; input %d, output %d tokens per request; %d threads; medians of %d "
                "runs\n",
                model_line.c_str(), a.input_len, a.output_len, threads, a.repeats);
  std::printf("%s%s", head, table.str().c_str());
  if (!a.markdown.empty()) {
    std::ofstream out(a.markdown, std::ios::app);
    out << head << "\n" << table.str();
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
    auto positive = [&](const std::string& v) {
      const int x = std::atoi(v.c_str());
      if (x <= 0) {
        std::fprintf(stderr, "error: %s must be a positive integer, got '%s'\n", arg.c_str(),
                     v.c_str());
        std::exit(2);
      }
      return x;
    };
    if (arg == "--batch-sizes") {
      a.batch_sizes.clear();
      std::stringstream ss(next());
      for (std::string item; std::getline(ss, item, ',');) a.batch_sizes.push_back(positive(item));
    } else if (arg == "--input-len") {
      a.input_len = positive(next());
    } else if (arg == "--output-len") {
      a.output_len = positive(next());
    } else if (arg == "--repeats") {
      a.repeats = positive(next());
    } else if (arg == "--threads") {
      a.threads = positive(next());
    } else if (arg == "--load-format") {
      if (!tierserve::parse_load_format(next(), &a.load_format)) {
        std::fprintf(stderr, "error: --load-format must be auto or dummy\n");
        return 2;
      }
    } else if (arg == "--deterministic") {
      a.deterministic = true;
    } else if (arg == "--markdown") {
      a.markdown = next();
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "error: unknown flag %s\n", arg.c_str());
      return 2;
    } else {
      a.model_dir = arg;
    }
  }
  if (a.model_dir.empty() || a.batch_sizes.empty()) {
    std::fprintf(stderr,
                 "usage: throughput_bench MODEL_DIR [--load-format dummy|auto] [--batch-sizes "
                 "1,32] [--input-len N] [--output-len N] [--repeats R] [--threads N] "
                 "[--deterministic] [--markdown FILE]\n");
    return 2;
  }
  return tierserve::run(a);
}

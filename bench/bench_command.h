// `tierserve bench`: `serve`, a load generator for any OpenAI-compatible server, with vLLM's
// `bench serve` flag names and result keys where they exist; `decode` and `offload`
// (bench/decode_command.h, bench/offload_command.h), the offline engine benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/datasets.h"
#include "bench/decode_command.h"
#include "bench/offload_command.h"

namespace tierserve::bench {

struct BenchServeOptions {
  std::string base_url = "http://127.0.0.1:8000";
  std::string endpoint = "/v1/completions";  // or /v1/chat/completions
  std::string model;                         // default: the server's first /v1/models entry
  std::string api_key;                       // --api-key, else OPENAI_API_KEY
  std::string tokenizer;                     // model directory; default: --model if a directory
  DatasetOptions dataset;
  int32_t max_concurrency = 0;
  std::string request_rate = "inf";
  std::string duration;  // "300s", "5m"; empty: --num-prompts requests
  std::string ramp_up;   // "20s"
  std::string sample_interval = "5s";
  std::string timeout = "600s";  // per connect, read and write
  std::vector<int32_t> concurrency_sweep;
  std::vector<double> metric_percentiles = {50, 90, 95, 99};
  bool ignore_eos = false;
  double temperature = 0;
  std::string result_json;
  std::string plot_dir;
  bool disable_tqdm = false;  // vLLM's name: no live progress line
};

// Every `tierserve bench` subcommand's options, and the subcommands once registered.
struct BenchOptions {
  BenchServeOptions serve;
  OfflineOptions decode;
  OffloadSweepOptions offload;
};
struct BenchCommands {
  CLI::App* serve = nullptr;
  CLI::App* decode = nullptr;
  CLI::App* offload = nullptr;
};

// Registers `bench` with its serve, decode and offload subcommands on `app`; returns `bench`.
CLI::App* add_bench_command(CLI::App& app, BenchOptions& options, BenchCommands* commands);

// Runs the benchmark: 0 when it ran (failed requests are reported, not fatal), 1 with a
// one-line error when it could not (bad flags, no server, a first request that fails).
// `env_api_key` is OPENAI_API_KEY, used when --api-key is absent.
int run_bench_serve(BenchServeOptions& options, const char* env_api_key);

// "300s", "5m", "1h", "250ms" or a number of seconds; kInvalidArgument naming `flag`.
Result<double> parse_seconds(const std::string& text, const std::string& flag);

}  // namespace tierserve::bench

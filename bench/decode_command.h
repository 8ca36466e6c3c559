// `tierserve bench decode MODEL_DIR`: the offline engine benchmark (no HTTP). For each batch
// size, that many requests at once, run to completion: decode tokens/s next to the memory-
// bandwidth bound of decode (each step reads the weights once: batch x read bandwidth / weight
// bytes), time to first token, step time, and the weight bytes streamed and stall time per step
// (with offloaded weights). Medians over --repeats runs after one warm-up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/llm_engine.h"

namespace tierserve::bench {

struct OfflineOptions {
  std::string model_dir;
  EngineOptions engine;  // the engine flags (server/engine_flags.h)
  std::string load_format = "auto";
  std::vector<int32_t> batch_sizes = {1, 8, 32};
  int32_t input_len = 128, output_len = 64, shared_prefix_len = 0;
  int32_t repeats = 3;
  std::string result_json;
};

CLI::App* add_bench_decode_command(CLI::App* bench, OfflineOptions& o);
// Registers --load-format, --batch-sizes, --input-len, --output-len, --shared-prefix-len,
// --repeats, --result-json and the engine flags (shared with `bench offload`).
void add_offline_flags(CLI::App* cmd, OfflineOptions& o);
// Checks the options shared with `bench offload`.
Status validate_offline(OfflineOptions& o);
int run_bench_decode(OfflineOptions& o);

}  // namespace tierserve::bench

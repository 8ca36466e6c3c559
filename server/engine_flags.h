// The engine's command-line flags (vLLM's names), shared by every subcommand that loads a model.
#pragma once

#include "CLI/CLI.hpp"
#include "engine/llm_engine.h"

namespace tierserve {

// Registers --max-model-len, --block-size, --max-num-batched-tokens, --max-num-seqs,
// --[no-]enable-prefix-caching, --gpu-memory-utilization, --device-memory-gb,
// --kv-cache-memory-bytes, --deterministic, --device, --threads and --cpu-isa on `cmd`, writing
// into `o`. Values are checked later by EngineOptions::validate().
// "4096", "4k" (4000), "4K" (4096), "1m", "1M": vLLM's --max-model-len forms.
Result<int32_t> parse_max_model_len(const std::string& text);

void add_engine_flags(CLI::App* cmd, EngineOptions& o);

}  // namespace tierserve

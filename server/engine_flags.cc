#include "server/engine_flags.h"

namespace tierserve {

void add_engine_flags(CLI::App* cmd, EngineOptions& o) {
  cmd->add_option("--max-model-len", o.max_model_len, "Context length (default: the model's)");
  cmd->add_option("--block-size", o.block_size, "Tokens per KV block")->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", o.max_num_batched_tokens,
                  "Tokens per forward step (prefill chunk)")
      ->capture_default_str();
  cmd->add_option("--max-num-seqs", o.max_num_seqs, "Sequences per forward step")
      ->capture_default_str();
  cmd->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o.enable_prefix_caching,
                "Reuse the KV of shared prompt prefixes (on by default)");
  cmd->add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                  "Fraction of device memory (on the CPU: of --device-memory-gb) for weights, "
                  "buffers and the KV cache")
      ->capture_default_str();
  cmd->add_option("--device-memory-gb", o.device_memory_gb,
                  "CPU backend: the RAM budget that stands for device memory (default: all RAM)");
  cmd->add_option("--kv-cache-memory-bytes", o.kv_cache_memory_bytes,
                  "KV cache size in bytes (overrides --gpu-memory-utilization)");
  cmd->add_flag("--deterministic", o.backend.deterministic,
                "Batch-invariant kernels: a request's output does not depend on its batch");
  cmd->add_option("--device", o.backend.device, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--threads", o.backend.num_threads, "CPU threads (0 = one per core)");
  cmd->add_option("--cpu-isa", o.backend.cpu_isa, "auto, avx512, avx2 or scalar")
      ->capture_default_str();
}

}  // namespace tierserve

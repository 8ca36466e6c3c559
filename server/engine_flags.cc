#include "server/engine_flags.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace tierserve {

Result<int32_t> parse_max_model_len(const std::string& text) {
  std::string digits = text;
  int64_t scale = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'k':
        scale = 1000;
        break;
      case 'K':
        scale = 1024;
        break;
      case 'm':
        scale = 1000000;
        break;
      case 'M':
        scale = 1048576;
        break;
      default:
        break;
    }
    if (scale != 1) digits.pop_back();
  }
  char* end = nullptr;
  const long long n = std::strtoll(digits.c_str(), &end, 10);
  if (digits.empty() || end != digits.c_str() + digits.size() || n <= 0 || n * scale > INT32_MAX) {
    return invalid_argument("must be a positive token count like 4096, 4k or 4K, got '" + text +
                            "'");
  }
  return static_cast<int32_t>(n * scale);
}

void add_engine_flags(CLI::App* cmd, EngineOptions& o) {
  // As vLLM: an integer, or with a suffix k/m (x1000, x1000000) or K/M (x1024, x1048576).
  cmd->add_option_function<std::string>(
         "--max-model-len",
         [&o](const std::string& v) {
           Result<int32_t> n = parse_max_model_len(v);
           if (!n.is_ok()) throw CLI::ValidationError("--max-model-len", n.status().message());
           o.max_model_len = n.value();
         },
         "Context length, e.g. 4096, 4k or 4K (default: the model's)")
      ->type_name("N[k|K|m|M]");
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
                  "Device memory to use, in GiB: on the CPU the RAM budget that stands for it "
                  "(default: all RAM); on a GPU a cap below its memory, to emulate a smaller one");
  cmd->add_option("--kv-cache-memory-bytes", o.kv_cache_memory_bytes,
                  "KV cache size in bytes (overrides --gpu-memory-utilization)");
  // "auto" (the default) or GiB; a bad value is an error naming the flag.
  auto gib_or_auto = [cmd](const char* name, std::optional<double>& out, const char* help) {
    cmd->add_option_function<std::string>(
           name,
           [name, &out](const std::string& v) {
             if (v == "auto") {
               out.reset();
               return;
             }
             char* end = nullptr;
             const double gb = std::strtod(v.c_str(), &end);
             if (end == v.c_str() || *end != '\0' || !(gb >= 0)) {
               throw CLI::ValidationError(name,
                                          "must be auto or a size in GiB >= 0, got '" + v + "'");
             }
             out = gb;
           },
           help)
        ->type_name("auto|GiB");
  };
  gib_or_auto("--cpu-offload-gb", o.cpu_offload_gb,
              "GiB of weights streamed from host memory (auto: only what does not fit the "
              "device)");
  gib_or_auto("--disk-offload-gb", o.disk_offload_gb,
              "GiB of weights streamed from disk under --offload-dir (auto: only what fits "
              "neither the device nor the host)");
  cmd->add_option("--offload-prefetch-depth", o.offload_prefetch_depth,
                  "Streamed layers copied ahead of compute")
      ->capture_default_str();
  cmd->add_option("--offload-queue-depth", o.offload_queue_depth,
                  "io_uring queue depth of the disk tier (weights and KV)")
      ->capture_default_str();
  CLI::Option* kv_host = cmd->add_option(
      "--kv-offloading-size", o.kv_offloading_size_gb,
      "GiB of host memory for KV blocks of preempted sequences (swapped out instead "
      "of recomputed)");
  // vLLM's older name, kept working.
  cmd->add_option_function<double>(
         "--swap-space",
         [&o, kv_host](double gb) {
           // Both given: an error, not whichever comes last (callbacks run after parsing).
           if (kv_host->count() > 0) {
             throw CLI::ValidationError("--swap-space",
                                        "is the old name of --kv-offloading-size; give only one");
           }
           std::fprintf(stderr,
                        "warning: --swap-space is deprecated; use --kv-offloading-size "
                        "(same meaning, GiB)\n");
           o.kv_offloading_size_gb = gb;
         },
         "Deprecated alias of --kv-offloading-size")
      ->group("");
  cmd->add_option("--kv-disk-offload-gb", o.kv_disk_offload_gb,
                  "GiB of disk (under --offload-dir) for KV blocks behind the host tier");
  cmd->add_option("--offload-dir", o.offload_dir,
                  "Directory for the disk tier's files (a private subdirectory, removed at exit)");
  cmd->add_flag("--enforce-eager", o.enforce_eager,
                "Run every step op by op: no CUDA graphs of decode steps (GPU only)");
  cmd->add_flag("--deterministic", o.backend.deterministic,
                "Batch-invariant kernels: a request's output does not depend on its batch");
  // As vLLM: the GPU when there is one. (EngineOptions itself defaults to the CPU, for tests.)
  o.backend.device = "auto";
  cmd->add_option("--device", o.backend.device,
                  "cpu, cuda or auto (auto: CUDA when a device is present, else the CPU)")
      ->capture_default_str();
  cmd->add_option("--threads", o.backend.num_threads, "CPU threads (0 = one per core)");
  cmd->add_option("--cpu-isa", o.backend.cpu_isa, "auto, avx512, avx2 or scalar")
      ->capture_default_str();
}

}  // namespace tierserve

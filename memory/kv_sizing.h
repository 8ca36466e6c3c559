// KV-cache sizing at start-up: how many blocks the device tier's budget leaves after weights and
// buffers, and the figures users look for (vLLM prints the same ones).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tierserve {

struct KvSizingInputs {
  uint64_t device_memory_bytes = 0;    // the device tier: GPU memory, or the CPU's RAM budget
  double memory_utilization = 0.9;     // fraction of it tierserve may use
  uint64_t used_bytes = 0;             // already taken: weights and activation buffers
  uint64_t kv_cache_memory_bytes = 0;  // if > 0, the KV cache size, overriding the fraction
  uint64_t block_bytes = 0;            // one block of all layers
  int32_t block_size = 16;             // tokens per block
  int32_t max_model_len = 0;           // tokens per request at most
};

struct KvSizing {
  int32_t num_blocks = 0;        // blocks in the device tier
  int32_t watermark_blocks = 0;  // kept free at admission (1%)
  uint64_t bytes = 0;            // num_blocks * block_bytes
  int64_t num_tokens = 0;        // num_blocks * block_size
  double max_concurrency = 0;    // requests of max_model_len tokens that fit at once

  // "KV cache 1.20 GiB = 78336 tokens (4896 blocks of 16); maximum concurrency for 4096
  // tokens per request: 19.12x".
  std::string describe(int32_t block_size, int32_t max_model_len) const;
};

// kInvalidArgument, saying which --max-model-len would fit (or what to change), when the budget
// leaves no room for one request of max_model_len tokens.
Result<KvSizing> size_kv_cache(const KvSizingInputs& in);

}  // namespace tierserve

#include "memory/kv_sizing.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "common/units.h"

namespace tierserve {
namespace {

int32_t blocks_for(int64_t tokens, int32_t block_size) {
  return static_cast<int32_t>((tokens + block_size - 1) / block_size);
}

int32_t watermark(int32_t num_blocks) { return num_blocks / 100; }

}  // namespace

std::string KvSizing::describe(int32_t block_size, int32_t max_model_len) const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "KV cache %s = %lld tokens (%d blocks of %d); maximum concurrency for %d tokens "
                "per request: %.2fx",
                format_bytes(bytes).c_str(), static_cast<long long>(num_tokens), num_blocks,
                block_size, max_model_len, max_concurrency);
  return buf;
}

Result<KvSizing> size_kv_cache(const KvSizingInputs& in) {
  if (in.block_bytes == 0 || in.block_size <= 0 || in.max_model_len <= 0) {
    return invalid_argument("KV sizing needs a block size and a max model length");
  }
  uint64_t kv_bytes = in.kv_cache_memory_bytes;
  const uint64_t budget =
      static_cast<uint64_t>(static_cast<double>(in.device_memory_bytes) * in.memory_utilization);
  if (kv_bytes == 0) {
    if (budget <= in.used_bytes) {
      return invalid_argument(
          "no room for the KV cache: weights and buffers take " + format_bytes(in.used_bytes) +
          " of the " + format_bytes(budget) + " that --gpu-memory-utilization " +
          std::to_string(in.memory_utilization) + " allows of " +
          format_bytes(in.device_memory_bytes) +
          " (raise it, or give --kv-cache-memory-bytes, or on the CPU --device-memory-gb)");
    }
    kv_bytes = budget - in.used_bytes;
  }
  KvSizing s;
  const uint64_t blocks =
      std::min<uint64_t>(kv_bytes / in.block_bytes, std::numeric_limits<int32_t>::max() / 2);
  s.num_blocks = static_cast<int32_t>(blocks);
  s.watermark_blocks = watermark(s.num_blocks);
  s.bytes = blocks * in.block_bytes;
  s.num_tokens = static_cast<int64_t>(s.num_blocks) * in.block_size;
  const int32_t per_request = blocks_for(in.max_model_len, in.block_size);
  s.max_concurrency = static_cast<double>(s.num_blocks) / per_request;
  const int32_t usable = s.num_blocks - s.watermark_blocks;
  if (usable < per_request) {
    const int64_t fits = static_cast<int64_t>(std::max(usable, 0)) * in.block_size;
    std::string msg = "the KV cache (" + format_bytes(s.bytes) + ", " +
                      std::to_string(s.num_tokens) +
                      " tokens) cannot hold one request of --max-model-len " +
                      std::to_string(in.max_model_len) + " tokens; ";
    msg += fits > 0 ? "use --max-model-len " + std::to_string(fits) + " or less, or "
                    : std::string("");
    msg +=
        "give the KV cache more memory (--gpu-memory-utilization, --kv-cache-memory-bytes, "
        "or --device-memory-gb on the CPU)";
    return invalid_argument(msg);
  }
  return s;
}

}  // namespace tierserve

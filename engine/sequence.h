// Sequence: one generation stream of a request (a request with n > 1 has n of them) as the
// scheduler and the engine see it. Owned by the LlmEngine; used only on the engine thread.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/sampling_params.h"
#include "memory/kv_cache_manager.h"
#include "offload/kv_swapper.h"

namespace tierserve {

enum class SequenceStatus : uint8_t {
  kWaiting,   // queued for admission (new, or preempted and to be recomputed)
  kRunning,   // admitted: holds KV blocks and is scheduled each step
  kSwapped,   // preempted by swapping: its KV lives in swap_slots (host or disk tier)
  kFinished,  // done or aborted; holds nothing
};

struct Sequence {
  Sequence(int64_t id, int32_t block_size) : id(id), kv(block_size) {}

  int64_t id;                   // unique within the engine
  int64_t request_id = 0;       // the request it belongs to
  int32_t index = 0;            // which of the request's n outputs (0-based)
  std::vector<int32_t> tokens;  // the prompt, then the tokens generated so far
  int32_t prompt_len = 0;       // tokens[0, prompt_len) are the prompt
  int32_t num_computed = 0;     // tokens[0, num_computed) have K/V in the cache
  int32_t max_tokens = 0;       // generated tokens at most
  SequenceStatus status = SequenceStatus::kWaiting;
  SequenceKv kv;                  // the blocks holding its K/V
  int32_t num_cached_tokens = 0;  // prompt tokens found in the prefix cache at first admission
  int32_t num_preemptions = 0;    // times its KV was dropped or swapped out to make room
  // While kSwapped (and from the step that swapped it out until the engine copied the blocks
  // out): one slot per block of tokens[0, num_computed), in order.
  std::vector<SwapSlot> swap_slots;
  std::mt19937_64 rng;  // its own generator (seeded from the request)

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_output() const { return num_tokens() - prompt_len; }
  // Tokens still to run through the model before the next one can be sampled.
  int32_t num_uncomputed() const { return num_tokens() - num_computed; }
};

}  // namespace tierserve

// ALiBi (Press et al., "Train Short, Test Long"): attention biases linear in the distance from
// query to key, one slope per head, in place of rotary embeddings (Baichuan 13B).
#pragma once

#include <cstdint>
#include <vector>

namespace tierserve {

// The slope of each of `num_heads` heads (> 0), as Baichuan's _get_interleave and vLLM compute
// them: for a power of two n, slope_h = s^(h + 1) with s = 2^(-8 / n); otherwise the slopes of
// the largest power of two below n, then every other slope of twice that power.
std::vector<float> alibi_slopes(int32_t num_heads);

}  // namespace tierserve

// The paged KV cache as the kernels see it (DESIGN.md §2). One physical block holds
// `block_size` tokens of K and V for all layers, contiguous:
//   block[layer][k|v][token][kv_head][head_dim]
// so one block is the unit of every transfer between tiers, and attention for layer l reads
// block_base + l * layer_stride.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace tierserve {

struct KvBlockLayout {
  int32_t num_layers = 0;     // decoder layers
  int32_t block_size = 16;    // tokens per block
  int32_t num_kv_heads = 0;   // KV heads per layer
  int32_t head_dim = 0;       // elements per head
  DType dtype = DType::kF32;  // element type of stored K and V

  // Elements of one token's K (or V) in one layer: [kv_head][head_dim].
  int64_t token_elems() const { return static_cast<int64_t>(num_kv_heads) * head_dim; }
  // Elements of K (or V) of one layer in one block: [token][kv_head][head_dim].
  int64_t kv_elems() const { return block_size * token_elems(); }
  // Elements of one layer in one block: K then V.
  int64_t layer_elems() const { return 2 * kv_elems(); }
  // Elements of a whole block: all layers.
  int64_t block_elems() const { return num_layers * layer_elems(); }
  size_t block_bytes() const { return static_cast<size_t>(block_elems()) * dtype_size(dtype); }
  // Element offset of token `t` (0..block_size-1), K (v = 0) or V (v = 1), of `layer` within a
  // block.
  int64_t offset(int32_t layer, int v, int32_t t) const {
    return layer * layer_elems() + v * kv_elems() + t * token_elems();
  }
};

// The device-tier block pool: `num_blocks` blocks of `layout.block_bytes()` each, from `base`.
struct KvCacheView {
  void* base = nullptr;    // block 0; not owned
  KvBlockLayout layout;    // geometry of each block
  int32_t num_blocks = 0;  // blocks in the pool

  // Address of block `block`'s first element.
  void* block_ptr(int32_t block) const {
    return static_cast<char*>(base) + static_cast<size_t>(block) * layout.block_bytes();
  }
};

// Which tokens one forward step processes and where their KV lives. The arrays are where the
// backend's ops read them (Backend::stage_step: host memory on the CPU, device memory on a GPU)
// and valid for the duration of the step.
// Sequence s owns tokens [query_start[s], query_start[s + 1]) of the step; they are its newest
// tokens, so query token j (0-based within the sequence's part of the step) has position
// seq_lens[s] - q_len + j.
struct AttentionMetadata {
  int32_t num_seqs = 0;                   // sequences in the step
  int32_t num_tokens = 0;                 // tokens in the step (query_start[num_seqs])
  const int32_t* query_start = nullptr;   // [num_seqs + 1] prefix sums of tokens per sequence
  const int32_t* seq_lens = nullptr;      // [num_seqs] tokens in the cache after this step
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq] physical block ids
  int32_t max_blocks_per_seq = 0;         // row length of block_tables
  const int32_t* slot_mapping = nullptr;  // [num_tokens] block * block_size + offset of new K/V
};

}  // namespace tierserve

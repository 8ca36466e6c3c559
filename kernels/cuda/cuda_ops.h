// Launchers of the CUDA backend's kernels (cuda_kernels.cu, cuda_attention.cu,
// cuda_sampling.cu). Plain types only (and kernels/sampling.h's plain structs), so that the .cu
// files need no other project header. Shapes and dtypes are checked by the
// caller (cuda_backend.cc); indices read from device memory (token ids, rows, positions, slots,
// block ids) are checked by the kernels, which report the first bad one in a DeviceErrors record
// instead of reading out of bounds. Every launcher enqueues on `stream` and returns the launch
// status (cudaGetLastError).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/sampling.h"

namespace tierserve::cuda {

// Element types of weights, KV and conversion buffers (DType's float types).
enum class ElemType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

// What a kernel found wrong in its device-side inputs; the first report wins.
enum class DeviceError : int32_t {
  kNone = 0,
  kTokenId = 1,   // embedding: id outside [0, limit)
  kRow = 2,       // gather_rows: row outside [0, limit)
  kPosition = 3,  // rope: position outside [0, limit)
  kSlot = 4,      // write_kv: slot outside [0, limit)
  kBlock = 5,     // paged attention: block id outside [0, limit)
};

// Lives in mapped pinned host memory: kernels write it, the host reads it after a sync.
struct DeviceErrors {
  int32_t code = 0;   // DeviceError of the first report, 0 when none
  int32_t index = 0;  // which element (token, row) was bad
  int64_t value = 0;  // the bad value
  int64_t limit = 0;  // the bound it broke
};

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w. With `residual` non-null: residual[r] += add[r]
// first and the norm is of the sum (x is then ignored). y may alias x or add.
cudaError_t launch_rmsnorm(const float* x, int64_t x_stride, float* residual, int64_t r_stride,
                           const float* add, int64_t add_stride, const void* w, ElemType w_type,
                           float eps, float* y, int64_t y_stride, int64_t rows, int64_t d,
                           cudaStream_t stream);

// Rotary embedding of q[t, hq, hd] and k[t, hk, hd] in place (strides in elements), cos/sin of
// f32(position) * inv_freq[i] computed in f32; `neox` pairs (i, i + half), else (2i, 2i + 1).
struct RopeArgs {
  float inv_freq[256];  // the first `half` are used
  int32_t half = 0;     // rotary_dim / 2
  int32_t max_positions = 0;
  bool neox = true;
};
cudaError_t launch_rope(float* q, int64_t q_s0, int64_t q_s1, int64_t hq, float* k, int64_t k_s0,
                        int64_t k_s1, int64_t hk, int64_t tokens, const int32_t* positions,
                        const RopeArgs& args, DeviceErrors* errors, cudaStream_t stream);

// out[r] = silu(gate[r]) * up[r]; out may alias gate.
cudaError_t launch_silu_mul(const float* gate, int64_t g_stride, const float* up, int64_t u_stride,
                            float* out, int64_t o_stride, int64_t rows, int64_t f,
                            cudaStream_t stream);

// out[t] = f32(table[ids[t]]); a bad id zero-fills its row and is reported.
cudaError_t launch_embedding(const int32_t* ids, const void* table, ElemType type,
                             int64_t table_stride, int64_t vocab, float* out, int64_t o_stride,
                             int64_t tokens, int64_t d, DeviceErrors* errors, cudaStream_t stream);

// dst[r] = src[rows[r]]; a bad row zero-fills and is reported.
cudaError_t launch_gather_rows(const float* src, int64_t s_stride, int64_t src_rows,
                               const int32_t* rows, float* dst, int64_t d_stride, int64_t r,
                               int64_t d, DeviceErrors* errors, cudaStream_t stream);

// Row-wise softmax of x[rows, n] in place (max subtracted).
cudaError_t launch_softmax(float* x, int64_t stride, int64_t rows, int64_t n, cudaStream_t stream);

// dst[r, 0..k) (contiguous, `type`) = src[r] (f32, row stride src_stride), rounding to nearest
// even.
cudaError_t launch_convert_rows(const float* src, int64_t src_stride, void* dst, ElemType type,
                                int64_t rows, int64_t k, cudaStream_t stream);

// dst[r, 0..k) (contiguous f16) = src[r] / scale[r] (f32, row stride src_stride), scale[r] a power
// of two that brings the row's largest finite magnitude below kF16SafeMagnitude (1 for every row
// whose magnitudes are already within it: ordinary activations, whose values are then converted
// exactly as launch_convert_rows does). No finite activation overflows f16 this way: a GEMM of
// the scaled rows is made whole by launch_scale_rows. `scale` receives `rows` floats.
inline constexpr float kF16SafeMagnitude = 32768.0f;
cudaError_t launch_convert_rows_f16_scaled(const float* src, int64_t src_stride, void* dst,
                                           float* scale, int64_t rows, int64_t k,
                                           cudaStream_t stream);

// y[r, 0..n) *= scale[r].
cudaError_t launch_scale_rows(float* y, int64_t y_stride, const float* scale, int64_t rows,
                              int64_t n, cudaStream_t stream);

// y[r, 0..n) += bias (any ElemType).
cudaError_t launch_add_bias(float* y, int64_t y_stride, const void* bias, ElemType type,
                            int64_t rows, int64_t n, cudaStream_t stream);

// out[i] = the column of the largest element of logits row rows[i] (ties: the lowest column);
// a bad row gives -1 and is reported.
cudaError_t launch_argmax_rows(const float* logits, int64_t stride, int64_t num_logit_rows,
                               int64_t n, const int32_t* rows, int32_t num_rows, int32_t* out,
                               DeviceErrors* errors, cudaStream_t stream);

// Applies rows[i]'s penalties (kernels/sampling.h) to logits [.., vocab] in place; rows and
// tokens device memory; a token outside the vocabulary is skipped.
cudaError_t launch_apply_penalties(float* logits, int64_t vocab, const PenaltyRow* rows,
                                   int32_t num_rows, const PenaltyToken* tokens,
                                   cudaStream_t stream);

// One row of launch_sample_rows (SampleRow, kernels/sampling.h, as the device reads it).
struct DeviceSampleRow {
  int32_t row = 0;       // logits row
  int32_t top_k = 0;     // 0: all
  float inv_t = 1.0f;    // f32(1 / temperature), as choose_token computes it
  double top_p = 1.0;    // 1: off
  double min_p = 0.0;    // 0: off
  double uniform = 0.0;  // the draw in [0, 1)
};

// Device buffers of launch_sample_rows, for up to max_rows rows of `vocab` logits.
struct SamplingBuffers {
  void* sort_temp = nullptr;  // CUB's temporary storage, sort_bytes
  size_t sort_bytes = 0;
  float* keys = nullptr;            // [max_rows, vocab] sorted logits
  int32_t* ids = nullptr;           // [max_rows, vocab] their ids
  const int32_t* ids_in = nullptr;  // [max_rows, vocab] 0..vocab-1 per row (launch_fill_ids)
  int32_t* begin = nullptr;         // [max_rows] segment offsets
  int32_t* end = nullptr;           // [max_rows]
};
// CUB's temporary storage for sorting max_rows rows of `vocab`.
cudaError_t sampling_workspace(int32_t max_rows, int64_t vocab, size_t* sort_bytes);
cudaError_t launch_fill_ids(int32_t* ids, int32_t max_rows, int64_t vocab, cudaStream_t stream);
// out[i] = the token choose_token draws from logits row rows[i].row (logits [logit_rows,
// vocab], contiguous); rows and out device memory.
cudaError_t launch_sample_rows(const float* logits, int32_t logit_rows, int64_t vocab,
                               const DeviceSampleRow* rows, int32_t num_rows,
                               const SamplingBuffers& buffers, int32_t* out, cudaStream_t stream);

// Copies rows [0, rows) of n floats between strided buffers.
cudaError_t launch_copy_rows(const float* src, int64_t s_stride, float* dst, int64_t d_stride,
                             int64_t rows, int64_t n, cudaStream_t stream);

// The paged KV cache as the kernels see it (kernels/paged_kv.h).
struct KvCacheArgs {
  char* base = nullptr;      // block 0
  int64_t block_bytes = 0;   // bytes per block
  int32_t num_blocks = 0;    // blocks in the pool
  int32_t block_size = 0;    // tokens per block
  int32_t num_kv_heads = 0;  // per layer
  int32_t head_dim = 0;      // per head
  int64_t layer_elems = 0;   // elements of one layer in a block (K and V)
  int64_t kv_elems = 0;      // elements of K (or V) of one layer in a block
  ElemType type = ElemType::kF32;
};

// Stores k and v ([tokens, num_kv_heads, head_dim] f32, strides s0/s1) of `layer` at
// slot_mapping[t], converting to the cache's type; slot -1 (padding) is skipped, any other bad
// slot is skipped and reported.
cudaError_t launch_write_kv(const float* k, int64_t k_s0, int64_t k_s1, const float* v,
                            int64_t v_s0, int64_t v_s1, int64_t tokens, const int32_t* slot_mapping,
                            int32_t layer, const KvCacheArgs& cache, DeviceErrors* errors,
                            cudaStream_t stream);

// Keys per split of paged attention: fixed, so that a token's result never depends on the
// batch (DESIGN.md §6 invariant 1).
inline constexpr int32_t kAttentionSplitKeys = 512;

struct AttentionArgs {
  const float* q = nullptr;  // [tokens, num_heads, head_dim]
  int64_t q_s0 = 0, q_s1 = 0;
  float* out = nullptr;  // [tokens, num_heads, head_dim]
  int64_t o_s0 = 0, o_s1 = 0;
  int32_t num_heads = 0;
  float scale = 1.0f;
  int32_t window = 0;            // > 0: keys (p - window, p]
  const float* alibi = nullptr;  // [num_heads] slopes (device memory) or null
  int32_t layer = 0;
  // Metadata (device memory, kernels/paged_kv.h).
  const int32_t* query_start = nullptr;
  const int32_t* seq_lens = nullptr;
  const int32_t* block_tables = nullptr;
  int32_t max_blocks_per_seq = 0;
  int32_t num_seqs = 0;
};

// A Q4 weight blob in device memory (kernels/q4_weight.h's layout).
struct Q4Args {
  const uint8_t* blob = nullptr;  // nibbles at the start
  int64_t n = 0, k = 0;
  int32_t group_size = 0;
  bool k_quant = false;  // the scales are in the k-quant form (supers_offset is used)
  uint64_t scales_offset = 0, zeros_offset = 0, supers_offset = 0;
};
// Rows of x one fused Q4 GEMV call takes.
inline constexpr int32_t kQ4GemvMaxRows = 8;

// y[i, r] = sum_c w[r, c] x[i, c] for i < m (1..kQ4GemvMaxRows), x in the weight's stored column
// order; one warp per output row, batch-invariant (a row's sum does not depend on m).
cudaError_t launch_q4_gemv(const Q4Args& w, const float* x, int64_t ldx, int32_t m, float* y,
                           int64_t ldy, cudaStream_t stream);
// out[i, :] (f16, row stride k) = w[row_begin + i, :] dequantized, for i < rows.
cudaError_t launch_q4_dequantize(const Q4Args& w, int64_t row_begin, int64_t rows, void* out,
                                 cudaStream_t stream);
// A Q8 weight blob in device memory (kernels/q8_weight.h).
struct Q8Args {
  const uint8_t* blob = nullptr;  // int8 values at the start
  int64_t n = 0, k = 0;
  int32_t group_size = 0;  // 16 or 32
  uint64_t scales_offset = 0;
  bool with_mins = false;  // w = scale * q - min, each step rounded (else scale * q)
  uint64_t mins_offset = 0;
};
// As launch_q4_gemv, for a Q8 weight (up to kQ4GemvMaxRows rows of x per call).
cudaError_t launch_q8_gemv(const Q8Args& w, const float* x, int64_t ldx, int32_t m, float* y,
                           int64_t ldy, cudaStream_t stream);
// out[i, :] (f16, row stride k) = w[row_begin + i, :] dequantized, for i < rows.
cudaError_t launch_q8_dequantize(const Q8Args& w, int64_t row_begin, int64_t rows, void* out,
                                 cudaStream_t stream);

// out[i, c] = x[i, perm[c]] (out contiguous [m, k]).
cudaError_t launch_gather_columns(const float* x, int64_t ldx, const int32_t* perm, int64_t m,
                                  int64_t k, float* out, cudaStream_t stream);

// Floats of split scratch one token needs with `max_splits` splits.
int64_t attention_scratch_floats(int32_t num_heads, int32_t head_dim, int32_t max_splits);

// Causal paged attention of tokens [token_begin, token_end) in two kernels: each (token, group
// of query heads sharing a KV head, split of kAttentionSplitKeys keys) block computes a partial
// softmax (max, sum, weighted V) into `scratch`; a second kernel merges the splits in order.
// Block id -1 (padding) is a missing key; a padding token's output is zeros.
// `max_splits` must cover the longest visible context of these tokens; `scratch` must hold
// attention_scratch_floats(...) * (token_end - token_begin) floats.
cudaError_t launch_paged_attention(const AttentionArgs& args, const KvCacheArgs& cache,
                                   int32_t token_begin, int32_t token_end, int32_t max_splits,
                                   float* scratch, DeviceErrors* errors, cudaStream_t stream);

}  // namespace tierserve::cuda

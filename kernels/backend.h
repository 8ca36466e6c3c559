// Backend: one compute device's memory and the op set the model needs (DESIGN.md §2). The CPU
// backend implements every op and is the reference; every other backend is tested against it.
//
// Conventions for all ops:
// - Activations (hidden states, q/k/v, attention output, logits) are f32, row-major, contiguous
//   unless a parameter says otherwise. Weights are f32, bf16 or f16 as stored in the checkpoint.
// - Shapes are checked with TS_CHECK: a mismatch is a bug in the caller, not bad input.
// - Ops are issued on the backend's compute stream in order; on the CPU backend they complete
//   before returning. synchronize() waits for everything issued.
// - A backend is used by one thread at a time (the engine thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "kernels/paged_kv.h"
#include "kernels/sampling.h"
#include "kernels/tensor.h"

namespace tierserve {

// How rotary embedding pairs elements within the rotated part of a head.
enum class RopeStyle : uint8_t {
  kNeox,         // pairs (i, i + rotary_dim/2): Hugging Face's rotate_half (Llama, Qwen, Mistral)
  kInterleaved,  // pairs (2i, 2i + 1): GPT-J / ChatGLM
};

// Precomputed rotary tables: cos[p][i] and sin[p][i] for position p and frequency i, with any
// scaling (linear, llama3, ...) already applied, in host memory. A backend may read the tables
// (the CPU) or recompute cos/sin(f32(p) * inv_freq[i]) from inv_freq (CUDA), which is how the
// tables were made.
inline constexpr int32_t kMaxRotaryDim = 512;
struct RopeTable {
  const float* cos = nullptr;  // [max_positions, rotary_dim / 2]
  const float* sin = nullptr;  // [max_positions, rotary_dim / 2]
  int32_t rotary_dim = 0;      // rotated elements at the start of each head (<= head_dim, even,
                               // <= kMaxRotaryDim)
  int32_t max_positions = 0;   // rows in the tables; positions must be below this
  RopeStyle style = RopeStyle::kNeox;
  const float* inv_freq = nullptr;  // [rotary_dim / 2] f32 frequencies, scaling applied
};

struct AttentionParams {
  float scale = 1.0f;          // multiplies q.k before softmax (usually 1/sqrt(head_dim))
  int32_t sliding_window = 0;  // if > 0, a query at position p sees keys at positions
                               // (p - sliding_window, p]; 0 means no window (all of [0, p])
  // ALiBi: [num_heads] f32 slopes in the backend's memory, or null. Head h's score for the key
  // at position j adds alibi_slopes[h] * (j - p) after scaling.
  const float* alibi_slopes = nullptr;
};

// The integer inputs of one forward step. The caller fills them in host memory; stage_step()
// returns the copy the backend's ops read.
struct StepInputs {
  const int32_t* token_ids = nullptr;   // [attn.num_tokens]
  const int32_t* positions = nullptr;   // [attn.num_tokens] position of each token in its sequence
  AttentionMetadata attn;               // sequences, block tables, slots for new K/V
  const int32_t* logit_rows = nullptr;  // [num_logit_rows] token rows whose logits are wanted
  int32_t num_logit_rows = 0;
};

// The largest step stage_step() must hold (reserve_steps()).
struct StepLimits {
  int32_t max_tokens = 0;          // tokens per step
  int32_t max_seqs = 0;            // sequences (and logit rows) per step
  int32_t max_blocks_per_seq = 0;  // block-table row length
  int32_t vocab_size = 0;          // logit row length (sample_rows' buffers); 0: none
  int32_t max_penalty_tokens = 0;  // apply_penalties' token entries per step
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu", "cuda".
  virtual std::string_view name() const = 0;
  virtual DeviceKind device() const = 0;

  // --- Device-tier memory -------------------------------------------------------------------
  // Total bytes of the device tier (GPU memory; the CPU backend's physical RAM), the base that
  // --gpu-memory-utilization takes a fraction of.
  virtual uint64_t memory_capacity() const = 0;
  // Allocates `bytes` aligned to at least 64 bytes (4096 where `bytes` >= 4096), or returns
  // kResourceExhausted. Called at start-up, never in the step loop.
  virtual Result<void*> allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  // Page-locked host memory for the host tier (DESIGN.md §2), where the backend has its own kind
  // (CUDA: cudaHostAlloc, which DMA reads without staging). nullptr when it has none: the
  // host tier then locks ordinary pages itself (offload/host_pool.h). Start-up only.
  virtual Result<void*> allocate_pinned_host(size_t bytes) {
    (void)bytes;
    return static_cast<void*>(nullptr);
  }
  virtual void free_pinned_host(void* ptr) { (void)ptr; }
  // Copies between host and device memory (either direction, or within one side) and returns
  // when the bytes have arrived. Thread-safe (the transfer engine's copy threads call it). Not
  // ordered with the compute stream: ops that write `src` or use `dst` must have completed
  // (synchronize(), or wait_fence() on a fence recorded after them).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // Waits until all issued work has completed. Reports (aborts on) an error a kernel detected
  // in its inputs, such as a token id outside the vocabulary.
  virtual void synchronize() = 0;

  // --- Compute-stream fences ------------------------------------------------------------------
  // record_fence() marks the point after every op issued so far; wait_fence(f) blocks the calling
  // thread (any thread) until the compute stream has passed f. Fences are numbered in order;
  // 0 is always passed. On the CPU ops complete before returning, so both are free.
  virtual uint64_t record_fence() { return 0; }
  virtual void wait_fence(uint64_t fence) { (void)fence; }

  // --- Step inputs ----------------------------------------------------------------------------
  // Device-tier bytes the backend holds beside what allocate() hands out: its own scratch, and
  // the buffers reserve_steps(limits) will take (GPU sampling buffers, say). The engine counts
  // them against the device budget before placing weights and sizing the KV cache.
  virtual uint64_t reserved_bytes(const StepLimits& limits) const {
    (void)limits;
    return 0;
  }
  // Sizes stage_step()'s buffers; start-up only. Steps beyond `limits` are a caller bug.
  virtual Status reserve_steps(const StepLimits& limits) {
    (void)limits;
    return Status::ok();
  }
  // Returns `host` with every array where this backend's ops read them: on the CPU `host`
  // itself; on a GPU one copy into device buffers, ordered before the ops issued after it and
  // valid until the next stage_step(). `host`'s arrays may be reused once this returns. The
  // integer arguments of the ops below (ids, positions, rows, metadata) come from here.
  virtual StepInputs stage_step(const StepInputs& host) { return host; }

  // --- Graphs --------------------------------------------------------------------------------
  // A backend with graphs (CUDA graphs) records the ops issued between begin_capture() and
  // end_capture() without running them, and runs them again, with the same arguments and
  // buffers, on each replay(). The step inputs of a captured step come from a stage_step() of the
  // same sizes just before capture, and before each replay. Padding rows of a captured batch use
  // slot -1 and block id -1, which such a backend's kernels skip. Start-up only, except replay.
  virtual bool supports_graphs() const { return false; }
  virtual Status begin_capture() { return unimplemented(std::string(name()) + ": no graphs"); }
  // The graph's id, or why the capture failed (the backend is then back to eager).
  virtual Result<int32_t> end_capture() {
    return unimplemented(std::string(name()) + ": no graphs");
  }
  virtual void replay(int32_t graph) { (void)graph; }

  // --- Ops ---------------------------------------------------------------------------------
  // y[m, n] = x[m, k] . w[n, k]^T (+ bias[n]). x and y f32; w f32, bf16 or f16 (a Hugging Face
  // Linear weight, [out_features, in_features]); bias f32, bf16 or f16, or null. Accumulates in
  // f32. x may have a row stride (stride(0) >= k); y is contiguous.
  // w may also be a packed view from pack_weight().
  virtual void gemm(const TensorView& x, const TensorView& w, const TensorView* bias,
                    const TensorView& y) = 0;
  // Bytes that a gemm weight [n, k] of `dtype` takes in this backend's own layout, or 0 when its
  // gemm reads the plain row-major layout best (then pack_weight must not be called). Constant
  // for the life of the backend.
  virtual uint64_t packed_weight_bytes(DType dtype, int64_t n, int64_t k) {
    (void)dtype, (void)n, (void)k;
    return 0;
  }
  // Writes `w` (a plain, contiguous, host-addressable gemm weight [n, k]) in the backend's
  // layout to `dst` (packed_weight_bytes(...) bytes, 64-byte aligned, host-addressable) and
  // returns the packed view that gemm takes. Called at load time, never in the step loop.
  virtual TensorView pack_weight(const TensorView& w, void* dst) {
    (void)dst;
    TS_CHECK(false) << "pack_weight on a backend without a packed layout: " << w.debug_string();
    return w;
  }

  // y[m, d] = x / sqrt(mean(x^2) + eps) * weight[d], computed in f32 (Hugging Face's RMSNorm).
  // x and y f32 and may alias; weight f32, bf16 or f16.
  virtual void rmsnorm(const TensorView& x, const TensorView& weight, float eps,
                       const TensorView& y) = 0;

  // residual[m, d] += x[m, d]; then y = rmsnorm(residual, weight, eps). All activations f32;
  // y may alias x (not residual).
  virtual void add_rmsnorm(const TensorView& residual, const TensorView& x,
                           const TensorView& weight, float eps, const TensorView& y) = 0;

  // Rotates q[t, num_heads, head_dim] and k[t, num_kv_heads, head_dim] in place, f32, token i at
  // positions[i] (t entries, from stage_step). Elements past table.rotary_dim are unchanged.
  virtual void rope(const TensorView& q, const TensorView& k, const int32_t* positions,
                    const RopeTable& table) = 0;

  // out[m, f] = silu(gate[m, f]) * up[m, f], f32. gate and up may have a row stride; out may
  // alias gate.
  virtual void silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) = 0;

  // out[t, d] = table[ids[t], :] converted to f32. ids (from stage_step) must be below
  // table.dim(0) (checked).
  virtual void embedding(const int32_t* ids, const TensorView& table, const TensorView& out) = 0;

  // dst[r, d] = src[rows[r], :] for r < dst.dim(0); f32; rows from stage_step (checked).
  virtual void gather_rows(const TensorView& src, const int32_t* rows, const TensorView& dst) = 0;

  // Row-wise softmax of x[m, n] in place, f32, numerically stable (max subtracted).
  virtual void softmax(const TensorView& x) = 0;

  // out[i] = the column of the largest element of row rows[i] of logits [R, n] (f32; ties: the
  // lowest column), for i < num_rows: greedy decoding where the logits are, so that only token
  // ids cross the bus. `rows` and `out` are host memory; returns when `out` is written. The
  // default reads host-addressable logits directly and copies device rows back one at a time;
  // a GPU backend reduces on the device.
  virtual void argmax_rows(const TensorView& logits, const int32_t* rows, int32_t num_rows,
                           int32_t* out);

  // out[i] = the token choose_token (kernels/sampling.h) draws from logits row rows[i].row with
  // rows[i]'s parameters, for i < num_rows (logits f32 [R, n], penalties already applied).
  // `rows` and `out` are host memory; returns when `out` is written. The default samples on the
  // host (copying device rows back); a GPU backend samples on the device, so that only token ids
  // cross the bus (its sums run in another order: a draw within rounding of a boundary between
  // two candidates may pick the other).
  virtual void sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                           int32_t* out);

  // Applies each row's penalties (kernels/sampling.h) to logits [R, n] (f32) in place, ordered
  // before the argmax_rows and sample_rows that follow. `rows` and `tokens` are host memory and
  // may be reused once this returns. The default works on host-addressable logits (copying
  // device rows there and back); a GPU backend applies them on the device.
  virtual void apply_penalties(const TensorView& logits, const PenaltyRow* rows, int32_t num_rows,
                               const PenaltyToken* tokens, int32_t num_tokens);

  // Stores k and v ([num_tokens, num_kv_heads, head_dim], f32) of `layer` into the cache slots
  // meta.slot_mapping[i], converting to the cache's dtype.
  virtual void write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                        const AttentionMetadata& meta, const KvCacheView& cache) = 0;

  // Causal attention of q[num_tokens, num_heads, head_dim] (f32) over `layer`'s K and V read
  // through meta.block_tables, with grouped-query heads (head h uses KV head
  // h / (num_heads / num_kv_heads)). The current step's K/V must already be written. Writes
  // out[num_tokens, num_heads, head_dim] (f32).
  virtual void paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                               const KvCacheView& cache, const AttentionParams& params,
                               const TensorView& out) = 0;
};

}  // namespace tierserve

// The CPU gemm: y[m, n] = x[m, k] . w[n, k]^T (+ bias). Packed weights (pack()) always go to
// oneDNN; plain ones go per call to the hand-written GEMV kernels (small m: decode) or oneDNN
// matmul (larger m: prefill), or to the GEMV kernels for every m in batch-invariant mode.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/cpu/scratch_buffer.h"
#include "kernels/tensor.h"

namespace tierserve {

struct CpuGemmOptions {
  // Calls with m <= gemv_max_m (at most kGemvMaxM) use the GEMV kernels; 0 sends every call to
  // oneDNN. See cpu_gemm.cc for the measurements behind the default.
  int32_t gemv_max_m = kGemvMaxM;
  // Whether bf16 and f16 weights may use oneDNN's own low-precision kernels where the CPU has
  // them. false (or no such kernel) runs the GEMV kernels up to 32 rows (when gemv_max_m > 0)
  // and converts weight panels to f32 beyond (slower, exact).
  bool native_low_precision = true;
  // Batch-invariant mode (--deterministic, DESIGN.md §6 invariant 1): every call, whatever m,
  // computes y[i, j] with exactly the operations an m = 1 call on row i alone would, so results
  // are bitwise equal for any m, position of the row in the batch, ldx and thread count (on one
  // kernel path; different paths differ). Every call then uses the GEMV kernels, with weights
  // blocked for L2 when m > kGemvMaxM; gemv_max_m and native_low_precision are ignored.
  bool batch_invariant = false;
  // Whether bf16/f16 weights may be packed once (pack()) into oneDNN's blocked layout, which
  // every m then multiplies through oneDNN: measured at the GEMV kernels' bandwidth for m = 1
  // and 1.4-2x faster than plain weights at m = 32 (see cpu_gemm.cc). Off in batch-invariant
  // mode and where oneDNN lacks a native kernel for the dtype.
  bool pack_weights = true;
};

// Not thread-safe: one caller at a time. Owns grown-on-demand scratch, so steady-state calls do
// not allocate.
class CpuGemm {
 public:
  // `pool` and `kernels` must outlive this object.
  CpuGemm(ThreadPool* pool, const CpuKernels* kernels, const CpuGemmOptions& options = {});
  ~CpuGemm();
  CpuGemm(const CpuGemm&) = delete;
  CpuGemm& operator=(const CpuGemm&) = delete;

  // The Backend::gemm contract (kernels/backend.h); shapes are TS_CHECKed.
  void run(const TensorView& x, const TensorView& w, const TensorView* bias, const TensorView& y);

  // Backend::packed_weight_bytes and Backend::pack_weight. The packed layout is, per column
  // slice of column_slice(n) (the split run() uses for this thread count), oneDNN's blocked
  // layout of that slice, the slices one after another.
  uint64_t packed_bytes(DType dtype, int64_t n, int64_t k);
  TensorView pack(const TensorView& w, void* dst);

  int64_t onednn_primitives_created() const { return onednn_.primitives_created(); }

 private:
  // Each returns with y written; `bias` is f32 or null. run_gemv takes any m: more than
  // kGemvMaxM rows run as groups of kGemvMaxM over L2-sized column blocks of w.
  void run_gemv(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                float* y, int64_t m, int64_t n, int64_t k);
  void run_onednn(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                  float* y, int64_t m, int64_t n, int64_t k);
  void run_f32_panels(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                      float* y, int64_t m, int64_t n, int64_t k);
  void run_packed(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                  float* y, int64_t m, int64_t n, int64_t k);
  // A Q4 weight (kernels/q4_weight.h): the Q4 GEMV kernels for small m and in batch-invariant
  // mode; otherwise panels of rows dequantized to f32 for oneDNN.
  void run_q4(const float* x, int64_t ldx, const TensorView& w, const float* bias, float* y,
              int64_t m, int64_t n, int64_t k);
  // A Q8 weight (kernels/q8_weight.h): the Q8 GEMV kernels, or dequantized panels, as run_q4.
  void run_q8(const float* x, int64_t ldx, const TensorView& w, const float* bias, float* y,
              int64_t m, int64_t n, int64_t k);
  // Whether a quantized weight takes the GEMV kernels at m rows.
  bool quantized_gemv(int64_t m) const;
  // The GEMV routes' schedule: calls `gemv(ctx, i, rows, r_begin, r_end)` for every group of up
  // to kGemvMaxM rows of x starting at row i and every block [r_begin, r_end) of w's n rows,
  // spread over the pool. Blocks are the pool's grain (kGemvChunkBytes of w) for m <= kGemvMaxM,
  // else L2-sized (kGemvBlockBytes), one per thread at least where n allows, so that each block
  // is read from memory once for all of x's rows. `row_bytes`: bytes of one row of w.
  void for_gemv_blocks(int64_t m, int64_t n, int64_t row_bytes,
                       void (*gemv)(const void* ctx, int64_t i, int32_t rows, int64_t r_begin,
                                    int64_t r_end),
                       const void* ctx);
  // y (row stride n) = x . w^T (+ bias) for w's rows in panels: `dequantize` writes rows
  // [r0, r0 + rows) of w as f32 (row stride k), multiplied by oneDNN.
  void run_dequantized_panels(const float* x, int64_t ldx,
                              void (*dequantize)(const void* ctx, int64_t r0, int64_t rows,
                                                 float* out),
                              const void* ctx, const float* bias, float* y, int64_t m, int64_t n,
                              int64_t k);
  // x as `dtype` (a copy in low_x_, row stride k) for oneDNN, which multiplies only like types.
  const void* convert_x(const float* x, int64_t ldx, DType dtype, int64_t m, int64_t k);
  // Columns per slice when a product with n columns is split across the pool: n itself when n
  // is too narrow for every thread to get kMinSliceColumns (then rows are split instead).
  int64_t column_slice(int64_t n) const;
  // y (row stride ldy) = x . w^T (+ bias) through oneDNN, x and w of `dtype`, split across the
  // pool into slices that each run single-threaded (see onednn_matmul.h); w packed or plain.
  void split_matmul(const void* x, int64_t ldx, const void* w, bool packed, DType dtype,
                    const float* bias, float* y, int64_t ldy, int64_t m, int64_t n, int64_t k);

  ThreadPool* pool_;
  const CpuKernels* kernels_;
  CpuGemmOptions options_;
  OnednnMatmul onednn_;
  ScratchBuffer packed_x_;              // GEMV input, packed and padded
  ScratchBuffer low_x_;                 // x converted to the weight dtype for oneDNN
  ScratchBuffer bias_;                  // bias converted to f32
  ScratchBuffer panel_;                 // f32 copy of a panel of weight rows (fallback path)
  ScratchBuffer q4_x_;                  // x gathered into a Q4 weight's column order
  ScratchBuffer q4_xsum_;               // its sums per group
  std::vector<ScratchBuffer> slice_y_;  // per pool slot: a dense column slice of y
};

}  // namespace tierserve

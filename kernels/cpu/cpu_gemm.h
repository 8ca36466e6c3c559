// The CPU gemm: y[m, n] = x[m, k] . w[n, k]^T (+ bias), choosing per call between the hand-written
// GEMV kernels (small m: decode) and oneDNN matmul (larger m: prefill), or the GEMV kernels for
// every m in batch-invariant mode.
#pragma once

#include <cstdint>
#include <memory>

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
  // them. false (or no such kernel) converts weight panels to f32 instead (slower, exact).
  bool native_low_precision = true;
  // Batch-invariant mode (--deterministic, DESIGN.md §6 invariant 1): every call, whatever m,
  // computes y[i, j] with exactly the operations an m = 1 call on row i alone would, so results
  // are bitwise equal for any m, position of the row in the batch, ldx and thread count (on one
  // kernel path; different paths differ). Every call then uses the GEMV kernels, with weights
  // blocked for L2 when m > kGemvMaxM; gemv_max_m and native_low_precision are ignored.
  bool batch_invariant = false;
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
  // y (row stride ldy) = x . w^T (+ bias) through oneDNN, x and w of `dtype`, split across the
  // pool into slices that each run single-threaded (see onednn_matmul.h).
  void split_matmul(const void* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                    float* y, int64_t ldy, int64_t m, int64_t n, int64_t k);

  ThreadPool* pool_;
  const CpuKernels* kernels_;
  CpuGemmOptions options_;
  OnednnMatmul onednn_;
  ScratchBuffer packed_x_;  // GEMV input, packed and padded
  ScratchBuffer low_x_;     // x converted to the weight dtype for oneDNN
  ScratchBuffer bias_;      // bias converted to f32
  ScratchBuffer panel_;     // f32 copy of a panel of weight rows (fallback path)
};

}  // namespace tierserve

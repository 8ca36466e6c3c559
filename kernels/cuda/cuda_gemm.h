// Backend::gemm on CUDA through cuBLAS. Activations are f32 (kernels/backend.h); a bf16 or f16
// weight is multiplied with the activations rounded to its own type (so that cuBLAS runs the
// tensor-core bf16/f16 kernels), accumulating and writing f32 — the precision Hugging Face's
// bf16 models compute in. f32 weights use f32 GEMMs (no TF32).
//
// Batch invariance (--deterministic): cuBLAS picks its kernel, and so its reduction order, by
// shape; a row's result would then depend on how many rows share the call. In batch-invariant
// mode every call has the same shape: kInvariantRows rows (the last chunk padded) and at most
// kInvariantCols columns, staged through scratch buffers of fixed alignment.
//
// Q4 weights (kernels/q4_weight.h): up to kQ4GemvMaxRows rows of x at a time go through the fused
// GEMV kernel (always, in batch-invariant mode, whose kernel is itself batch-invariant); larger
// batches multiply tiles of rows dequantized to f16 through cuBLAS, x rounded to f16. Act-order
// weights first gather x's columns through the permutation.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "kernels/tensor.h"

namespace tierserve::cuda {

inline constexpr int64_t kInvariantRows = 16;
inline constexpr int64_t kInvariantCols = 8192;
// Rows of x per pass of the f16-tile route (their power-of-two scales are kept on the device).
inline constexpr int64_t kTileXRows = 8192;
// Device bytes CudaGemm allocates at creation, beyond the batch-invariant staging.
inline constexpr uint64_t kGemmScratchBytes =
    (uint64_t{32 + 64 + 64 + 32} << 20) + kTileXRows * sizeof(float);

class CudaGemm {
 public:
  // Everything is issued on `stream`. Scratch (converted activations, cuBLAS workspace and the
  // batch-invariant staging) is allocated here, once. Errors: kResourceExhausted, kInternal.
  static Result<std::unique_ptr<CudaGemm>> create(cudaStream_t stream, bool batch_invariant);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;

  // y[m, n] = x[m, k] . w[n, k]^T (+ bias): the Backend::gemm contract, device memory.
  void run(const TensorView& x, const TensorView& w, const TensorView* bias, const TensorView& y);

 private:
  CudaGemm(cudaStream_t stream, bool batch_invariant)
      : stream_(stream), batch_invariant_(batch_invariant) {}
  // One cuBLAS call: y[m, n] (ldy) = x[m, k] (ldx, type of w) . w^T.
  void call(const void* x, int64_t ldx, const TensorView& w, int64_t n_begin, int64_t n, float* y,
            int64_t ldy, int64_t m);
  void run_invariant(const TensorView& x, const TensorView& w, const TensorView& y);
  void run_q4(const TensorView& x, const TensorView& w, const TensorView& y);
  void run_q8(const TensorView& x, const TensorView& w, const TensorView& y);
  // yr[mr, n] (row stride n) = xr[mr, k] (ldx) . w^T through cuBLAS on f16 tiles of w's rows:
  // `dequantize(ctx, row_begin, rows, tile)` enqueues the dequantization of a tile. Rows of x
  // are f16 too, each divided by a power of two that keeps it finite (1 for ordinary
  // activations) and y's rows multiplied back, so that large activations do not overflow f16.
  void run_f16_tiles(const float* xr, int64_t ldx, int64_t mr, int64_t n, int64_t k, float* yr,
                     cudaError_t (*dequantize)(const void* ctx, int64_t row_begin, int64_t rows,
                                               void* tile, cudaStream_t stream),
                     const void* ctx);

  cudaStream_t stream_;
  bool batch_invariant_;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;   // cuBLAS workspace
  void* x_scratch_ = nullptr;   // activations converted to the weight's type
  float* y_scratch_ = nullptr;  // batch-invariant output staging [kInvariantRows, kInvariantCols]
  size_t x_scratch_bytes_ = 0;
  float* gather_scratch_ = nullptr;  // x in a Q4 weight's column order
  void* tile_scratch_ = nullptr;     // Q4 / Q8 rows dequantized to f16
  float* row_scale_ = nullptr;       // [kTileXRows] powers of two the f16-tile route divides x by
};

}  // namespace tierserve::cuda

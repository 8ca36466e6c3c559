#include "kernels/cuda/cuda_gemm.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/op_checks.h"

namespace tierserve::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what cuBLAS advises for Hopper
constexpr size_t kXScratchBytes = size_t{64} << 20;   // converted activations per call

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

}  // namespace

Result<std::unique_ptr<CudaGemm>> CudaGemm::create(cudaStream_t stream, bool batch_invariant) {
  std::unique_ptr<CudaGemm> g(new CudaGemm(stream, batch_invariant));
  if (cublasCreate(&g->handle_) != CUBLAS_STATUS_SUCCESS) {
    g->handle_ = nullptr;
    return internal_error("cuBLAS could not be initialised (cublasCreate)");
  }
  TS_CUBLAS_CHECK(cublasSetStream(g->handle_, stream));
  TS_RETURN_IF_ERROR(cuda_status(cudaMalloc(&g->workspace_, kWorkspaceBytes), "cuBLAS workspace"));
  TS_CUBLAS_CHECK(cublasSetWorkspace(g->handle_, g->workspace_, kWorkspaceBytes));
  // Plain f32 math for f32 GEMMs: TF32 would change results against the CPU reference.
  TS_CUBLAS_CHECK(cublasSetMathMode(g->handle_, CUBLAS_DEFAULT_MATH));
  g->x_scratch_bytes_ = kXScratchBytes;
  TS_RETURN_IF_ERROR(
      cuda_status(cudaMalloc(&g->x_scratch_, g->x_scratch_bytes_), "GEMM activation scratch"));
  if (batch_invariant) {
    TS_RETURN_IF_ERROR(cuda_status(
        cudaMalloc(reinterpret_cast<void**>(&g->y_scratch_),
                   static_cast<size_t>(kInvariantRows * kInvariantCols) * sizeof(float)),
        "GEMM output staging"));
  }
  return g;
}

CudaGemm::~CudaGemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
  cudaFree(workspace_);
  cudaFree(x_scratch_);
  cudaFree(y_scratch_);
}

void CudaGemm::call(const void* x, int64_t ldx, const TensorView& w, int64_t n_begin, int64_t n,
                    float* y, int64_t ldy, int64_t m) {
  const float alpha = 1.0f, beta = 0.0f;
  const int64_t k = w.dim(1);
  const void* wp = static_cast<const char*>(w.data) +
                   static_cast<size_t>(n_begin * w.stride(0)) * dtype_size(w.dtype);
  const cudaDataType_t t = cuda_type(w.dtype);
  // Column-major view: y^T[n, m] = w[n, k] (stored as k x n, transposed) . x^T[k, m].
  TS_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                               static_cast<int>(m), static_cast<int>(k), &alpha, wp, t,
                               static_cast<int>(w.stride(0)), x, t, static_cast<int>(ldx), &beta, y,
                               CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

void CudaGemm::run(const TensorView& x, const TensorView& w, const TensorView* bias,
                   const TensorView& y) {
  check_rows(x, DType::kF32, 2, "gemm x", DeviceKind::kCuda);
  TS_CHECK(is_float_dtype(w.dtype) && !w.packed) << "gemm weight " << describe(w);
  check_rows(w, w.dtype, 2, "gemm w", DeviceKind::kCuda);
  check_rows(y, DType::kF32, 2, "gemm y", DeviceKind::kCuda);
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  TS_CHECK(w.dim(1) == k && y.dim(0) == m && y.dim(1) == n && y.stride(0) == n)
      << "gemm " << describe(x) << " . " << describe(w) << "^T -> " << describe(y);
  if (bias != nullptr) check_vector(*bias, n, "gemm bias", DeviceKind::kCuda);
  TS_CHECK(k < (int64_t{1} << 31) && n < (int64_t{1} << 31)) << "gemm too large for cuBLAS";
  if (m == 0 || n == 0) return;
  if (k == 0) {
    TS_CUDA_CHECK(cudaMemsetAsync(y.data, 0, y.nbytes(), stream_));
  } else if (batch_invariant_) {
    run_invariant(x, w, y);
  } else if (w.dtype == DType::kF32) {
    call(x.data, x.stride(0), w, 0, n, y.ptr<float>(), n, m);
  } else {
    // Converted activations, as many rows per cuBLAS call as the scratch holds.
    const int64_t rows =
        std::max<int64_t>(1, static_cast<int64_t>(x_scratch_bytes_ / (k * dtype_size(w.dtype))));
    for (int64_t r = 0; r < m; r += rows) {
      const int64_t mr = std::min(rows, m - r);
      TS_CUDA_CHECK(launch_convert_rows(x.ptr<const float>() + r * x.stride(0), x.stride(0),
                                        x_scratch_, elem_type(w.dtype), mr, k, stream_));
      call(x_scratch_, k, w, 0, n, y.ptr<float>() + r * n, n, mr);
    }
  }
  if (bias != nullptr) {
    TS_CUDA_CHECK(
        launch_add_bias(y.ptr<float>(), n, bias->data, elem_type(bias->dtype), m, n, stream_));
  }
}

void CudaGemm::run_invariant(const TensorView& x, const TensorView& w, const TensorView& y) {
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  const size_t esize = dtype_size(w.dtype);
  TS_CHECK(static_cast<size_t>(kInvariantRows * k) * esize <= x_scratch_bytes_)
      << "batch-invariant gemm with k = " << k << " exceeds its scratch";
  for (int64_t r = 0; r < m; r += kInvariantRows) {
    const int64_t mr = std::min(kInvariantRows, m - r);
    // Rows past mr are zeros: the call always has kInvariantRows rows.
    if (mr < kInvariantRows) {
      TS_CUDA_CHECK(
          cudaMemsetAsync(x_scratch_, 0, static_cast<size_t>(kInvariantRows * k) * esize, stream_));
    }
    TS_CUDA_CHECK(launch_convert_rows(x.ptr<const float>() + r * x.stride(0), x.stride(0),
                                      x_scratch_, elem_type(w.dtype), mr, k, stream_));
    for (int64_t c = 0; c < n; c += kInvariantCols) {
      const int64_t nc = std::min(kInvariantCols, n - c);
      call(x_scratch_, k, w, c, nc, y_scratch_, nc, kInvariantRows);
      TS_CUDA_CHECK(
          launch_copy_rows(y_scratch_, nc, y.ptr<float>() + r * n + c, n, mr, nc, stream_));
    }
  }
}

}  // namespace tierserve::cuda

#include "kernels/cuda/cuda_gemm.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/op_checks.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"

namespace tierserve::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what cuBLAS advises for Hopper
constexpr size_t kXScratchBytes = size_t{64} << 20;   // converted activations per call
constexpr size_t kGatherBytes = size_t{64} << 20;     // act-order x, f32
constexpr size_t kTileBytes = size_t{32} << 20;       // dequantized Q4 rows, f16
constexpr size_t kRowScaleBytes = kTileXRows * sizeof(float);
static_assert(kWorkspaceBytes + kXScratchBytes + kGatherBytes + kTileBytes + kRowScaleBytes ==
              kGemmScratchBytes);

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
  TS_RETURN_IF_ERROR(
      cuda_status(cudaMalloc(reinterpret_cast<void**>(&g->gather_scratch_), kGatherBytes),
                  "Q4 gather scratch"));
  TS_RETURN_IF_ERROR(cuda_status(cudaMalloc(&g->tile_scratch_, kTileBytes), "Q4 tile scratch"));
  TS_RETURN_IF_ERROR(cuda_status(
      cudaMalloc(reinterpret_cast<void**>(&g->row_scale_), kRowScaleBytes), "row scales"));
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
  cudaFree(gather_scratch_);
  cudaFree(tile_scratch_);
  cudaFree(row_scale_);
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
  TS_CHECK((is_float_dtype(w.dtype) || w.dtype == DType::kQ4 || w.dtype == DType::kQ8) && !w.packed)
      << "gemm weight " << describe(w);
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
  } else if (w.dtype == DType::kQ4) {
    run_q4(x, w, y);
  } else if (w.dtype == DType::kQ8) {
    run_q8(x, w, y);
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

void CudaGemm::run_q4(const TensorView& x, const TensorView& w, const TensorView& y) {
  const Q4Layout l = Q4Layout::of(w);
  const int64_t m = x.dim(0), k = l.k, n = l.n;
  Q4Args a;
  a.blob = static_cast<const uint8_t*>(w.data);
  a.n = n;
  a.k = k;
  a.group_size = l.group_size;
  a.k_quant = l.k_quant;
  a.scales_offset = l.scales_offset;
  a.zeros_offset = l.zeros_offset;
  a.supers_offset = l.supers_offset;
  const int64_t gather_rows = static_cast<int64_t>(kGatherBytes / (static_cast<size_t>(k) * 4));
  TS_CHECK(!l.act_order || gather_rows >= 1) << "act-order Q4 weight with k = " << k;
  const bool fused = batch_invariant_ || m <= kQ4GemvMaxRows;
  // Rows of x per pass: what the gather scratch holds (act order), else all.
  const int64_t pass = l.act_order ? std::min<int64_t>(m, gather_rows) : m;
  for (int64_t r = 0; r < m; r += pass) {
    const int64_t mr = std::min(pass, m - r);
    const float* xr = x.ptr<const float>() + r * x.stride(0);
    int64_t ldx = x.stride(0);
    if (l.act_order) {
      TS_CUDA_CHECK(launch_gather_columns(xr, ldx,
                                          reinterpret_cast<const int32_t*>(a.blob + l.perm_offset),
                                          mr, k, gather_scratch_, stream_));
      xr = gather_scratch_;
      ldx = k;
    }
    float* yr = y.ptr<float>() + r * n;
    if (fused) {
      for (int64_t i = 0; i < mr; i += kQ4GemvMaxRows) {
        TS_CUDA_CHECK(launch_q4_gemv(
            a, xr + i * ldx, ldx, static_cast<int32_t>(std::min<int64_t>(kQ4GemvMaxRows, mr - i)),
            yr + i * n, n, stream_));
      }
      continue;
    }
    run_f16_tiles(
        xr, ldx, mr, n, k, yr,
        [](const void* ctx, int64_t row_begin, int64_t rows, void* tile, cudaStream_t stream) {
          return launch_q4_dequantize(*static_cast<const Q4Args*>(ctx), row_begin, rows, tile,
                                      stream);
        },
        &a);
  }
}

void CudaGemm::run_f16_tiles(const float* xr, int64_t ldx, int64_t mr, int64_t n, int64_t k,
                             float* yr,
                             cudaError_t (*dequantize)(const void* ctx, int64_t row_begin,
                                                       int64_t rows, void* tile,
                                                       cudaStream_t stream),
                             const void* ctx) {
  // Tiles of rows dequantized to f16, x scaled and rounded to f16, through cuBLAS.
  const int64_t xrows = std::clamp<int64_t>(
      static_cast<int64_t>(x_scratch_bytes_ / (static_cast<size_t>(k) * 2)), 1, kTileXRows);
  // Whole multiples of 64 rows where k allows, so that every tile's y columns stay aligned.
  int64_t tile = std::max<int64_t>(1, static_cast<int64_t>(kTileBytes / (k * 2)));
  if (tile >= 64) tile = tile / 64 * 64;
  TensorView tile_view =
      TensorView::contiguous(tile_scratch_, DType::kF16, {tile, k}, DeviceKind::kCuda);
  for (int64_t i = 0; i < mr; i += xrows) {
    const int64_t mi = std::min(xrows, mr - i);
    TS_CUDA_CHECK(
        launch_convert_rows_f16_scaled(xr + i * ldx, ldx, x_scratch_, row_scale_, mi, k, stream_));
    for (int64_t c = 0; c < n; c += tile) {
      const int64_t nc = std::min(tile, n - c);
      TS_CUDA_CHECK(dequantize(ctx, c, nc, tile_scratch_, stream_));
      call(x_scratch_, k, tile_view, 0, nc, yr + i * n + c, n, mi);
    }
    TS_CUDA_CHECK(launch_scale_rows(yr + i * n, n, row_scale_, mi, n, stream_));
  }
}

void CudaGemm::run_q8(const TensorView& x, const TensorView& w, const TensorView& y) {
  const Q8Layout l = Q8Layout::of(w);
  const int64_t m = x.dim(0), k = l.k, n = l.n;
  Q8Args a;
  a.blob = static_cast<const uint8_t*>(w.data);
  a.n = n;
  a.k = k;
  a.group_size = l.group_size;
  a.scales_offset = l.scales_offset;
  a.with_mins = l.with_mins;
  a.mins_offset = l.mins_offset;
  const float* xp = x.ptr<const float>();
  float* yp = y.ptr<float>();
  if (batch_invariant_ || m <= kQ4GemvMaxRows) {
    for (int64_t i = 0; i < m; i += kQ4GemvMaxRows) {
      TS_CUDA_CHECK(launch_q8_gemv(a, xp + i * x.stride(0), x.stride(0),
                                   static_cast<int32_t>(std::min<int64_t>(kQ4GemvMaxRows, m - i)),
                                   yp + i * n, n, stream_));
    }
    return;
  }
  run_f16_tiles(
      xp, x.stride(0), m, n, k, yp,
      [](const void* ctx, int64_t row_begin, int64_t rows, void* tile, cudaStream_t stream) {
        return launch_q8_dequantize(*static_cast<const Q8Args*>(ctx), row_begin, rows, tile,
                                    stream);
      },
      &a);
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

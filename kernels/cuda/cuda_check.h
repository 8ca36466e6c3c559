// Status checks for CUDA runtime and cuBLAS calls: every call's status is checked (issue #8).
// TS_CUDA_CHECK / TS_CUBLAS_CHECK abort with the call and the error (a failed launch or copy in
// the step loop is a bug or a dead device, not bad input); cuda_status() turns a failure that
// input can cause (an allocation) into a Status.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/check.h"
#include "common/status.h"

#define TS_CUDA_CHECK(expr)                                                                   \
  do {                                                                                        \
    const cudaError_t ts_cuda_err_ = (expr);                                                  \
    TS_CHECK(ts_cuda_err_ == cudaSuccess) << #expr << ": " << cudaGetErrorName(ts_cuda_err_)  \
                                          << " (" << cudaGetErrorString(ts_cuda_err_) << ")"; \
  } while (0)

#define TS_CUBLAS_CHECK(expr)                                          \
  do {                                                                 \
    const cublasStatus_t ts_cublas_st_ = (expr);                       \
    TS_CHECK(ts_cublas_st_ == CUBLAS_STATUS_SUCCESS)                   \
        << #expr << ": " << cublasGetStatusName(ts_cublas_st_) << " (" \
        << cublasGetStatusString(ts_cublas_st_) << ")";                \
  } while (0)

namespace tierserve::cuda {

// kResourceExhausted for an out-of-memory error, kInternal for anything else; `what` says what
// was being done. Clears the error so that later calls are not blamed for it.
inline Status cuda_status(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return Status::ok();
  cudaGetLastError();
  const std::string msg =
      what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  return err == cudaErrorMemoryAllocation ? resource_exhausted(msg) : internal_error(msg);
}

}  // namespace tierserve::cuda

// The CUDA backend: GPU memory as the device tier, cuBLAS for gemm, and the kernels of
// cuda_kernels.cu and cuda_attention.cu for everything else (DESIGN.md §2). Declared without
// CUDA types so that the registry can create it without seeing a CUDA header (DESIGN.md §1).
//
// Streams: ops run in order on one compute stream; Backend::copy runs on a host-to-device or a
// device-to-host copy stream (by the direction of the copy) and returns when the bytes have
// arrived; fences are CUDA events on the compute stream. Host memory for the host tier is pinned
// on the GPU's NUMA node (mmap, bound with hwloc, cudaHostRegister; cudaHostAlloc where the node
// is unknown or binding is refused); device memory comes from cudaMalloc, at start-up only (the
// step loop allocates nothing: GEMM, attention and step-input buffers are sized at creation or
// by reserve_steps). Decode steps can be captured as CUDA graphs (Backend::begin_capture).
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "kernels/backend.h"

namespace tierserve::cuda {

struct CudaBackendOptions {
  int32_t device_index = 0;    // CUDA device ordinal
  bool deterministic = false;  // batch-invariant kernels (--deterministic)
  // Attention split scratch; a step whose tokens need more runs in several launches.
  uint64_t attention_scratch_bytes = uint64_t{64} << 20;

  Status validate() const;
};

// Errors: kNotFound when there is no such device (or no driver); kResourceExhausted or
// kInternal when the device cannot be set up (context, streams, cuBLAS, scratch memory).
Result<std::unique_ptr<Backend>> create_cuda_backend(const CudaBackendOptions& options);

}  // namespace tierserve::cuda

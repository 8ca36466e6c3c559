// oneDNN matmul primitives for the CPU gemm (cpu_gemm.h), cached by shape and dtype, executed
// single-threaded on the kernel pool's threads. The oneDNN headers stay inside onednn_matmul.cc.
//
// Why single-threaded: Debian's oneDNN runs on OpenMP, whose worker threads spin for about 4 ms
// of CPU time after every parallel region (measured with this library on the development
// machine). They would compete with the kernel pool for the same cores on every op that follows
// a gemm, ignore BackendOptions::num_threads, and, started from a pinned thread, all inherit its
// single-core affinity. So every thread that creates or runs a primitive first limits its own
// OpenMP team to one thread (ensure_single_threaded_openmp), and CpuGemm splits each product
// across the pool itself.
#pragma once

#include <cstdint>
#include <memory>

#include "common/dtype.h"

namespace tierserve {

// One matmul y[m, n] (row stride ldy) = x[m, k] (row stride ldx) . w[n, k]^T (+ bias[n]), with w
// either used in place as a k x n matrix of strides {1, k} (a Hugging Face weight needs no copy)
// or packed once by OnednnMatmul::pack into the blocked layout oneDNN's brgemm kernels read
// directly (plain weights are re-blocked into the scratchpad on every call, which at m = 32
// costs as much as the product). x and w share `dtype` (f32, bf16 or f16); y and bias are f32.
struct MatmulShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t ldx = 0, ldy = 0;
  DType dtype = DType::kF32;
  bool bias = false;
  bool packed = false;  // w is in the layout of pack(n, k, dtype)
  bool operator==(const MatmulShape& o) const {
    return m == o.m && n == o.n && k == o.k && ldx == o.ldx && ldy == o.ldy && dtype == o.dtype &&
           bias == o.bias && packed == o.packed;
  }
};

// Makes the calling thread's OpenMP parallel regions single-threaded (omp_set_num_threads(1) in
// the OpenMP runtime oneDNN was linked with, looked up at run time; nothing where there is
// none). Idempotent and cheap after the first call on a thread.
void ensure_single_threaded_openmp();

// prepare() and supports() are for one thread at a time (the engine thread) and never run
// concurrently with execute(); execute() calls on distinct slots may run concurrently.
class OnednnMatmul {
 public:
  struct Entry;  // a primitive with per-slot memory objects; opaque outside the .cc file

  // `num_slots`: the most execute() calls that may run at once (the pool's thread count).
  explicit OnednnMatmul(int num_slots);
  ~OnednnMatmul();
  OnednnMatmul(const OnednnMatmul&) = delete;
  OnednnMatmul& operator=(const OnednnMatmul&) = delete;

  // Whether oneDNN has a real (non-reference) kernel for `dtype` on this CPU: f32 always; bf16
  // and f16 only where the ISA has one (oneDNN 2.6 needs AVX-512 FP16 for f16). Probed once.
  bool supports(DType dtype);

  // The primitive for `shape`, created and cached on first use (the cache keeps the 512 most
  // recently used). Valid until the second-next prepare(); sizes every slot's scratchpad for it.
  // supports(shape.dtype) must be true. A oneDNN error aborts (it is a bug, not bad input).
  const Entry* prepare(const MatmulShape& shape);

  // Bytes of the weights `entry` reads (the packed size for a packed shape).
  static size_t weights_bytes(const Entry* entry);

  // Runs `entry` on `slot` (0 <= slot < num_slots) with these operands (bias only if the shape
  // has one). Allocates nothing on this side.
  void execute(const Entry* entry, int slot, const void* x, const void* w, const float* bias,
               float* y);

  // The packed layout of a weight [n, k] of `dtype` (supports(dtype) must be true): its size in
  // bytes, and pack(), which writes the plain weight `w` (row-major [n, k]) in it to `dst`. The
  // layout is oneDNN's choice for this (n, k, dtype); it does not depend on m (prepare() checks
  // that every packed primitive reads exactly this layout).
  size_t packed_bytes(int64_t n, int64_t k, DType dtype);
  void pack(int64_t n, int64_t k, DType dtype, const void* w, void* dst);

  // Primitives created so far (for tests of the cache).
  int64_t primitives_created() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierserve

// The CPU backend: host memory as the device tier, oneDNN for gemm, and hand-written AVX2/AVX-512
// kernels (with a scalar reference path) for everything else. It implements every op and is the
// reference other backends are tested against (DESIGN.md §2).
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "common/thread_pool.h"
#include "common/topology.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_attention.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/scratch_buffer.h"

namespace tierserve {

struct CpuBackendOptions {
  int32_t num_threads = 0;     // kernel threads including the caller; 0 = one per physical core
  CpuIsa isa = CpuIsa::kAuto;  // kernel path; a forced path must be supported by the CPU
  CpuGemmOptions gemm;         // GEMV / oneDNN choice (tests and benchmarks change it)

  // kInvalidArgument for a negative or absurd thread count.
  Status validate() const;
};

// Ops run on the calling thread and the backend's pool, and complete before returning. Not
// thread-safe: one caller at a time (the engine thread), as kernels/backend.h says.
class CpuBackend final : public Backend {
 public:
  // Errors: kInvalidArgument (bad options); kUnimplemented when options.isa names a path the
  // running CPU cannot execute.
  static Result<std::unique_ptr<CpuBackend>> create(const CpuBackendOptions& options);
  ~CpuBackend() override;

  std::string_view name() const override { return "cpu"; }
  DeviceKind device() const override { return DeviceKind::kCpu; }
  // The resolved kernel path (never kAuto).
  CpuIsa isa() const { return kernels_->isa; }
  int num_threads() const { return pool_->num_threads(); }
  ThreadPool& thread_pool() { return *pool_; }
  int64_t onednn_primitives_created() const { return gemm_->onednn_primitives_created(); }

  uint64_t memory_capacity() const override;
  Result<void*> allocate(size_t bytes) override;
  void deallocate(void* ptr) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override {}

  void gemm(const TensorView& x, const TensorView& w, const TensorView* bias,
            const TensorView& y) override;
  uint64_t packed_weight_bytes(DType dtype, int64_t n, int64_t k) override;
  TensorView pack_weight(const TensorView& w, void* dst) override;
  void rmsnorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& y) override;
  void add_rmsnorm(const TensorView& residual, const TensorView& x, const TensorView& weight,
                   float eps, const TensorView& y) override;
  void rope(const TensorView& q, const TensorView& k, const int32_t* positions,
            const RopeTable& table) override;
  void silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
  void embedding(const int32_t* ids, const TensorView& table, const TensorView& out) override;
  void gather_rows(const TensorView& src, const int32_t* rows, const TensorView& dst) override;
  void softmax(const TensorView& x) override;
  // Sizes sample_rows' scratch for limits.vocab_size, so that sampling does not allocate.
  Status reserve_steps(const StepLimits& limits) override;
  void sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                   int32_t* out) override;
  void write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                const AttentionMetadata& meta, const KvCacheView& cache) override;
  void paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                       const KvCacheView& cache, const AttentionParams& params,
                       const TensorView& out) override;

 private:
  CpuBackend(const CpuBackendOptions& options, CpuIsa isa);
  // `weight` ([d], any float dtype) as f32: its own data, or a converted copy in norm_weight_.
  const float* norm_weight_f32(const TensorView& weight, int64_t d);

  Topology topology_;
  const CpuKernels* kernels_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<CpuGemm> gemm_;
  std::unique_ptr<CpuAttention> attention_;
  ScratchBuffer norm_weight_;
  std::unique_ptr<SamplingScratch> sampling_;  // sample_rows' candidates (reserve_steps)
};

}  // namespace tierserve

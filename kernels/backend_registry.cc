#include "kernels/backend_registry.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_isa.h"

#if defined(TIERSERVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_device.h"
#endif

namespace tierserve {
namespace {

constexpr int32_t kMaxThreads = 4096;

Result<std::unique_ptr<Backend>> create_cpu(const BackendOptions& options) {
  CpuBackendOptions cpu;
  cpu.num_threads = options.num_threads;
  cpu.gemm.batch_invariant = options.deterministic;
  if (!parse_cpu_isa(options.cpu_isa, &cpu.isa)) {
    return invalid_argument("unknown CPU kernel path '" + options.cpu_isa + "'");
  }
  TS_ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::create(cpu));
  return std::unique_ptr<Backend>(std::move(backend));
}

Result<std::unique_ptr<Backend>> create_cuda(const BackendOptions& options) {
#if defined(TIERSERVE_CUDA)
  cuda::CudaBackendOptions cuda;
  cuda.deterministic = options.deterministic;
  return cuda::create_cuda_backend(cuda);
#else
  (void)options;
  return not_found("no CUDA device: this binary was built without CUDA; use --device cpu");
#endif
}

// Whether "auto" finds a CUDA device.
bool cuda_present() {
#if defined(TIERSERVE_CUDA)
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

}  // namespace

Status BackendOptions::validate() const {
  if (device != "cpu" && device != "cuda" && device != "auto") {
    return invalid_argument("device must be cpu, cuda or auto, got '" + device + "'");
  }
  if (num_threads < 0 || num_threads > kMaxThreads) {
    return invalid_argument("CPU kernel threads must be in [0, " + std::to_string(kMaxThreads) +
                            "] (0 = one per core), got " + std::to_string(num_threads));
  }
  CpuIsa isa;
  if (!parse_cpu_isa(cpu_isa, &isa)) {
    return invalid_argument("CPU kernel path must be auto, avx512, avx2 or scalar, got '" +
                            cpu_isa + "'");
  }
  return Status::ok();
}

Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  if (options.device == "cuda" || (options.device == "auto" && cuda_present())) {
    return create_cuda(options);
  }
  return create_cpu(options);
}

std::vector<std::string> built_backends() {
#if defined(TIERSERVE_CUDA)
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

}  // namespace tierserve

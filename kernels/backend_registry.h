// The one place that knows which backends were built (DESIGN.md §1).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"

namespace tierserve {

struct BackendOptions {
  std::string device = "cpu";    // "cpu", "cuda" or "auto"
  int32_t num_threads = 0;       // CPU threads for kernels; 0 = one per core
  std::string cpu_isa = "auto";  // "auto", "avx512", "avx2" or "scalar": CPU kernel paths
  bool deterministic = false;    // batch-invariant kernels (--deterministic)

  Status validate() const;
};

// Creates the backend `options.device` names, or says why it cannot.
Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options);

// Names of the backends compiled into this binary ("cpu", and "cuda" when built).
std::vector<std::string> built_backends();

}  // namespace tierserve

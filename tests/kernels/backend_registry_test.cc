// create_backend, BackendOptions::validate and built_backends.
#include "kernels/backend_registry.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/cpu/cpu_isa.h"

#if defined(TIERSERVE_CUDA)
#include "kernels/cuda/cuda_device.h"
#endif

namespace tierserve {
namespace {

bool cuda_device_present() {
#if defined(TIERSERVE_CUDA)
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

TEST(BackendRegistryTest, CpuCreatesTheCpuBackendAndAutoPicksCudaWhenPresent) {
  for (const char* device : {"cpu", "auto"}) {
    BackendOptions options;
    options.device = device;
    options.num_threads = 2;
    auto backend = create_backend(options);
    ASSERT_TRUE(backend.is_ok()) << backend.status().to_string();
    const bool cuda = std::string(device) == "auto" && cuda_device_present();
    EXPECT_EQ(backend.value()->name(), cuda ? "cuda" : "cpu");
    EXPECT_EQ(backend.value()->device(), cuda ? DeviceKind::kCuda : DeviceKind::kCpu);
  }
}

TEST(BackendRegistryTest, ValidateRejectsBadFields) {
  BackendOptions ok;
  EXPECT_TRUE(ok.validate().is_ok());

  BackendOptions device = ok;
  device.device = "tpu";
  EXPECT_EQ(device.validate().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(device.validate().message().find("tpu"), std::string::npos);

  BackendOptions threads = ok;
  threads.num_threads = -3;
  EXPECT_EQ(threads.validate().code(), StatusCode::kInvalidArgument);
  threads.num_threads = 1 << 20;
  EXPECT_EQ(threads.validate().code(), StatusCode::kInvalidArgument);

  BackendOptions isa = ok;
  isa.cpu_isa = "sse4";
  EXPECT_EQ(isa.validate().code(), StatusCode::kInvalidArgument);
  auto created = create_backend(isa);
  ASSERT_FALSE(created.is_ok());
  EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument);
}

TEST(BackendRegistryTest, ForcedIsaIsHonouredOrRefused) {
  for (const char* name : {"scalar", "avx2", "avx512"}) {
    BackendOptions options;
    options.cpu_isa = name;
    options.num_threads = 1;
    CpuIsa isa;
    ASSERT_TRUE(parse_cpu_isa(name, &isa));
    auto backend = create_backend(options);
    if (cpu_supports_isa(isa)) {
      EXPECT_TRUE(backend.is_ok()) << backend.status().to_string();
    } else {
      ASSERT_FALSE(backend.is_ok());
      EXPECT_EQ(backend.status().code(), StatusCode::kUnimplemented);
    }
  }
}

TEST(BackendRegistryTest, CudaIsCreatedOrSaysWhyItIsUnavailable) {
  BackendOptions options;
  options.device = "cuda";
  auto backend = create_backend(options);
  if (cuda_device_present()) {
    ASSERT_TRUE(backend.is_ok()) << backend.status().to_string();
    EXPECT_EQ(backend.value()->name(), "cuda");
    return;
  }
  ASSERT_FALSE(backend.is_ok());
  EXPECT_EQ(backend.status().code(), StatusCode::kNotFound);
  EXPECT_NE(backend.status().message().find("no CUDA device"), std::string::npos);
}

TEST(BackendRegistryTest, BuiltBackendsListsWhatWasCompiled) {
  const std::vector<std::string> built = built_backends();
  EXPECT_EQ(built.front(), "cpu");
  const bool has_cuda = std::find(built.begin(), built.end(), "cuda") != built.end();
#if defined(TIERSERVE_CUDA)
  EXPECT_TRUE(has_cuda);
#else
  EXPECT_FALSE(has_cuda);
#endif
}

}  // namespace
}  // namespace tierserve

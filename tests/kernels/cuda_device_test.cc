// The CUDA device discovery the registry relies on; skipped where there is no device.
#include "kernels/cuda/cuda_device.h"

#include <gtest/gtest.h>

#include "kernels/backend_registry.h"

namespace tierserve {
namespace {

TEST(CudaDeviceTest, DescribesEveryDeviceAndTheRegistryCreatesTheBackend) {
  const int count = cuda::device_count();
  ASSERT_GE(count, 0);
  if (count == 0) GTEST_SKIP() << "no CUDA device";
  for (int i = 0; i < count; ++i) {
    const std::string description = cuda::device_description(i);
    EXPECT_NE(description.find("sm_"), std::string::npos) << description;
    EXPECT_NE(description.find("GiB"), std::string::npos) << description;
  }
  EXPECT_NE(cuda::device_description(count).find("CUDA error"), std::string::npos);
  BackendOptions options;
  options.device = "cuda";
  auto backend = create_backend(options);
  ASSERT_TRUE(backend.is_ok()) << backend.status().to_string();
  EXPECT_EQ(backend.value()->device(), DeviceKind::kCuda);
  EXPECT_GT(backend.value()->memory_capacity(), uint64_t{1} << 30);
}

}  // namespace
}  // namespace tierserve

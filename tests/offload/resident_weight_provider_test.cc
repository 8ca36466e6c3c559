#include "offload/resident_weight_provider.h"

#include <gtest/gtest.h>

#include "kernels/backend_registry.h"

namespace tierserve {
namespace {

TEST(ResidentWeightProviderTest, ServesUnitsFromItsArena) {
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok()) << backend.status().to_string();
  auto arena = backend.value()->allocate(256);
  ASSERT_TRUE(arena.is_ok());
  float* p = static_cast<float*>(arena.value());
  for (int i = 0; i < 64; ++i) p[i] = static_cast<float>(i);
  std::vector<WeightUnit> units(2);
  units[0].name = "a";
  units[0].tensors.push_back(TensorView::contiguous(p, DType::kF32, {32}));
  units[1].name = "b";
  units[1].tensors.push_back(TensorView::contiguous(p + 32, DType::kF32, {4, 8}));
  ResidentWeightProvider provider(backend.value().get(), arena.value(), 256, std::move(units));
  EXPECT_EQ(provider.num_units(), 2);
  EXPECT_EQ(provider.device_bytes(), 256u);
  auto u = provider.acquire(1);
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u.value()->name, "b");
  EXPECT_EQ(u.value()->tensors[0].ptr<float>()[0], 32.0f);
  provider.release(1);
}

TEST(ResidentWeightProviderDeathTest, UnpairedReleaseIsABug) {
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok());
  std::vector<WeightUnit> units(1);
  ResidentWeightProvider provider(backend.value().get(), nullptr, 0, std::move(units));
  EXPECT_DEATH(provider.release(0), "released unacquired");
}

}  // namespace
}  // namespace tierserve

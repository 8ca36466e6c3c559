// ResidentWeightProvider: every unit lives in the device tier for the life of the provider, in
// one arena allocated from the backend at start-up. acquire() never waits.
#pragma once

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "offload/weight_provider.h"

namespace tierserve {

class ResidentWeightProvider : public WeightProvider {
 public:
  // Takes ownership of `arena` (allocated from `backend`, freed with it at destruction) and of the
  // units whose views point into it. `backend` must outlive the provider.
  ResidentWeightProvider(Backend* backend, void* arena, uint64_t arena_bytes,
                         std::vector<WeightUnit> units);
  ~ResidentWeightProvider() override;
  ResidentWeightProvider(const ResidentWeightProvider&) = delete;
  ResidentWeightProvider& operator=(const ResidentWeightProvider&) = delete;

  int32_t num_units() const override { return static_cast<int32_t>(units_.size()); }
  Result<const WeightUnit*> acquire(int32_t unit) override;
  void release(int32_t unit) override;
  uint64_t device_bytes() const override { return arena_bytes_; }

 private:
  Backend* backend_;
  void* arena_;
  uint64_t arena_bytes_;
  std::vector<WeightUnit> units_;
  std::vector<bool> acquired_;  // per unit: between acquire and release (checks pairing)
};

}  // namespace tierserve

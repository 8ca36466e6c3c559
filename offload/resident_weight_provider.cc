#include "offload/resident_weight_provider.h"

#include "common/check.h"

namespace tierserve {

ResidentWeightProvider::ResidentWeightProvider(Backend* backend, void* arena, uint64_t arena_bytes,
                                               std::vector<WeightUnit> units)
    : backend_(backend),
      arena_(arena),
      arena_bytes_(arena_bytes),
      units_(std::move(units)),
      acquired_(units_.size(), false) {}

ResidentWeightProvider::~ResidentWeightProvider() {
  if (arena_ != nullptr) backend_->deallocate(arena_);
}

Result<const WeightUnit*> ResidentWeightProvider::acquire(int32_t unit) {
  TS_CHECK(unit >= 0 && unit < num_units()) << "unit " << unit;
  TS_CHECK(!acquired_[static_cast<size_t>(unit)]) << "unit " << unit << " acquired twice";
  acquired_[static_cast<size_t>(unit)] = true;
  return &units_[static_cast<size_t>(unit)];
}

void ResidentWeightProvider::release(int32_t unit) {
  TS_CHECK(unit >= 0 && unit < num_units()) << "unit " << unit;
  TS_CHECK(acquired_[static_cast<size_t>(unit)]) << "unit " << unit << " released unacquired";
  acquired_[static_cast<size_t>(unit)] = false;
}

}  // namespace tierserve

// WeightProvider: how the model gets its weights (DESIGN.md §2). The model never owns weight
// memory; before computing with a unit of weights it acquires it and afterwards releases it, so
// that a provider may stream units from lower tiers ahead of use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace tierserve {

// A group of tensors placed and moved as a whole: the token embedding, one decoder layer, or the
// output head. Tensor order is the model's own slot numbering (see engine/model_weights.h).
struct WeightUnit {
  std::string name;                 // "embedding", "layer 3", "head"
  std::vector<TensorView> tensors;  // device-tier views; an absent optional tensor has null data
};

// Thread-safety: acquire/release are called by the engine thread only.
class WeightProvider {
 public:
  virtual ~WeightProvider() = default;
  virtual int32_t num_units() const = 0;
  // Returns unit `unit`'s tensors in the device tier, waiting only for that unit's transfer.
  // The views stay valid until release(unit). A failed transfer returns its error.
  virtual Result<const WeightUnit*> acquire(int32_t unit) = 0;
  // Ends the use of `unit` that the last acquire began.
  virtual void release(int32_t unit) = 0;
  // Bytes of weights held in the device tier.
  virtual uint64_t device_bytes() const = 0;
};

}  // namespace tierserve

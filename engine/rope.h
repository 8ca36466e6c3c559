// Rotary position embedding tables, computed as Hugging Face's rope initialisation functions do
// (default, linear and llama3 scaling).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model_config.h"
#include "kernels/backend.h"

namespace tierserve {

// Owns cos/sin tables for positions [0, max_positions) and hands the backend a RopeTable view.
class RopeCache {
 public:
  // Tables for rotary dimension `rotary_dim` (even) with base `theta` and `scaling`.
  RopeCache(int32_t rotary_dim, double theta, const RopeScaling& scaling, int32_t max_positions,
            RopeStyle style);

  const RopeTable& table() const { return table_; }
  // inv_freq[i] for i < rotary_dim / 2, after scaling.
  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  std::vector<double> inv_freq_;
  std::vector<float> inv_freq_f32_;  // the f32 factors the tables were made with
  std::vector<float> cos_;
  std::vector<float> sin_;
  RopeTable table_;
};

// inv_freq of Hugging Face's rope for `rotary_dim`, `theta` and `scaling`.
std::vector<double> rope_inv_freq(int32_t rotary_dim, double theta, const RopeScaling& scaling);

}  // namespace tierserve

#include "engine/rope.h"

#include <cmath>
#include <numbers>

#include "common/check.h"

namespace tierserve {

std::vector<double> rope_inv_freq(int32_t rotary_dim, double theta, const RopeScaling& scaling) {
  TS_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0) << "rotary_dim " << rotary_dim;
  const int32_t half = rotary_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int32_t i = 0; i < half; ++i) {
    // Hugging Face computes the exponent in float32: arange(0, dim, 2).float() / dim.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    inv_freq[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / std::pow(theta, static_cast<double>(exponent)));
  }
  switch (scaling.type) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear:
      for (double& f : inv_freq) f /= scaling.factor;
      break;
    case RopeScalingType::kFactors:
      TS_CHECK(scaling.freq_factors.size() == inv_freq.size())
          << scaling.freq_factors.size() << " rope frequency factors for " << inv_freq.size()
          << " frequencies";
      for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] /= scaling.freq_factors[i];
      break;
    case RopeScalingType::kLlama3: {
      const double old_len = scaling.original_max_position_embeddings;
      const double low_wavelen = old_len / scaling.low_freq_factor;
      const double high_wavelen = old_len / scaling.high_freq_factor;
      for (double& f : inv_freq) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen > low_wavelen) {
          f /= scaling.factor;  // low frequencies: fully scaled
        } else if (wavelen >= high_wavelen) {
          // Medium frequencies: interpolate between scaled and unscaled.
          const double smooth = (old_len / wavelen - scaling.low_freq_factor) /
                                (scaling.high_freq_factor - scaling.low_freq_factor);
          f = (1.0 - smooth) * f / scaling.factor + smooth * f;
        }
      }
      break;
    }
  }
  return inv_freq;
}

RopeCache::RopeCache(int32_t rotary_dim, double theta, const RopeScaling& scaling,
                     int32_t max_positions, RopeStyle style)
    : inv_freq_(rope_inv_freq(rotary_dim, theta, scaling)) {
  const size_t half = inv_freq_.size();
  TS_CHECK_LE(rotary_dim, kMaxRotaryDim) << "rotary dimension";
  for (double f : inv_freq_) inv_freq_f32_.push_back(static_cast<float>(f));
  cos_.resize(static_cast<size_t>(max_positions) * half);
  sin_.resize(static_cast<size_t>(max_positions) * half);
  for (int32_t p = 0; p < max_positions; ++p) {
    for (size_t i = 0; i < half; ++i) {
      // As Hugging Face: the angle is an f32 product of position and f32 inv_freq.
      float angle = static_cast<float>(p) * inv_freq_f32_[i];
      cos_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      sin_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  table_.cos = cos_.data();
  table_.sin = sin_.data();
  table_.inv_freq = inv_freq_f32_.data();
  table_.rotary_dim = rotary_dim;
  table_.max_positions = max_positions;
  table_.style = style;
}

}  // namespace tierserve

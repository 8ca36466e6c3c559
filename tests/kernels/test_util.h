// Helpers for the kernel tests: random inputs (never zero), NaN poisoning of outputs, dtype
// round trips, and the list of CPU kernel paths to run every test on.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_isa.h"

namespace tierserve::testing {

// Every kernel path, in the order scalar, avx2, avx512; tests skip paths the CPU lacks.
inline std::vector<CpuIsa> all_isas() { return {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}; }

inline std::string isa_param_name(const ::testing::TestParamInfo<CpuIsa>& info) {
  return std::string(cpu_isa_name(info.param));
}

// A backend on `isa` with `threads` kernel threads, or a failed test.
inline std::unique_ptr<CpuBackend> make_cpu_backend(CpuIsa isa, int threads = 2) {
  CpuBackendOptions options;
  options.isa = isa;
  options.num_threads = threads;
  auto backend = CpuBackend::create(options);
  EXPECT_TRUE(backend.is_ok()) << backend.status().to_string();
  return backend.is_ok() ? std::move(backend).value() : nullptr;
}

// Uniform in [-scale, -scale/20] U [scale/20, scale]: random sign and magnitude, never zero, so
// an op that reads or writes nothing cannot match a reference by accident.
class Random {
 public:
  explicit Random(uint32_t seed) : gen_(seed) {}

  float value(float scale = 1.0f) {
    std::uniform_real_distribution<float> mag(scale / 20, scale);
    return std::bernoulli_distribution(0.5)(gen_) ? mag(gen_) : -mag(gen_);
  }
  std::vector<float> values(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = value(scale);
    return v;
  }
  int32_t index(int32_t n) { return std::uniform_int_distribution<int32_t>(0, n - 1)(gen_); }
  std::mt19937& engine() { return gen_; }

 private:
  std::mt19937 gen_;
};

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, kNaN); }

// Values of `dtype` stored as raw bits (f32 as its bits too), converted from f32.
inline std::vector<uint16_t> to_half(const std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = dtype == DType::kBF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  }
  return out;
}

// `v` rounded through `dtype` and back (identity for f32).
inline std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  if (dtype == DType::kF32) return v;
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = dtype == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v[i])) : f16_to_f32(f32_to_f16(v[i]));
  }
  return out;
}

// Storage for a tensor of f32 values converted to `dtype`: f32 data as is, bf16/f16 as bits.
class TypedBuffer {
 public:
  TypedBuffer(const std::vector<float>& values, DType dtype) : dtype_(dtype) {
    if (dtype == DType::kF32) {
      f32_ = values;
    } else {
      half_ = to_half(values, dtype);
    }
  }
  void* data() { return dtype_ == DType::kF32 ? static_cast<void*>(f32_.data()) : half_.data(); }
  DType dtype() const { return dtype_; }

 private:
  DType dtype_;
  std::vector<float> f32_;
  std::vector<uint16_t> half_;
};

}  // namespace tierserve::testing

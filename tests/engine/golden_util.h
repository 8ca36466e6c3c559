// The golden files of tests/fixtures/reference.py (TIERSERVE_GOLDEN_DIR), shared by the tests
// that compare the engine with them on the CPU (golden_test) and on CUDA (cuda_engine_test).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tierserve::testing {

struct Golden {
  std::string model;
  std::string dtype;
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // per step
  std::vector<float> margins;              // top-1 minus top-2 logit per step
};

inline Golden read_golden(const std::filesystem::path& path) {
  std::ifstream in(path);
  const nlohmann::json j = nlohmann::json::parse(in);
  Golden g;
  g.model = j.at("model").get<std::string>();
  g.dtype = j.at("dtype").get<std::string>();
  g.prompt = j.at("prompt_token_ids").get<std::vector<int32_t>>();
  g.tokens = j.at("token_ids").get<std::vector<int32_t>>();
  g.logits = j.at("logits").get<std::vector<std::vector<float>>>();
  g.margins = j.at("top1_margin").get<std::vector<float>>();
  return g;
}

// The golden files' names (without .json), sorted.
inline std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(TIERSERVE_GOLDEN_DIR)) {
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline bool is_bf16(const Golden& g) { return g.dtype == "bf16" || g.dtype == "bfloat16"; }
inline bool is_f16(const Golden& g) { return g.dtype == "f16" || g.dtype == "float16"; }

inline float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace tierserve::testing

#include "kernels/backend.h"

#include <algorithm>
#include <vector>

namespace tierserve {

void Backend::argmax_rows(const TensorView& logits, const int32_t* rows, int32_t num_rows,
                          int32_t* out) {
  TS_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && logits.stride(1) == 1)
      << "argmax_rows of " << logits.debug_string();
  const int64_t n = logits.dim(1);
  TS_CHECK(n > 0) << "argmax_rows over empty rows";
  std::vector<float> copied;
  for (int32_t i = 0; i < num_rows; ++i) {
    TS_CHECK(rows[i] >= 0 && rows[i] < logits.dim(0))
        << "argmax_rows row " << rows[i] << " of " << logits.dim(0);
    const float* row = logits.ptr<const float>() + rows[i] * logits.stride(0);
    if (logits.device != DeviceKind::kCpu) {
      copied.resize(static_cast<size_t>(n));
      copy(copied.data(), row, static_cast<size_t>(n) * sizeof(float));
      row = copied.data();
    }
    out[i] = static_cast<int32_t>(std::max_element(row, row + n) - row);
  }
}

void Backend::sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                          int32_t* out) {
  TS_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && logits.stride(1) == 1)
      << "sample_rows of " << logits.debug_string();
  const int64_t n = logits.dim(1);
  if (num_rows == 0) return;
  SamplingScratch scratch(static_cast<int32_t>(n));
  std::vector<float> copied(static_cast<size_t>(n));
  for (int32_t i = 0; i < num_rows; ++i) {
    TS_CHECK(rows[i].row >= 0 && rows[i].row < logits.dim(0))
        << "sample_rows row " << rows[i].row << " of " << logits.dim(0);
    const float* row = logits.ptr<const float>() + rows[i].row * logits.stride(0);
    if (logits.device != DeviceKind::kCpu) {
      copy(copied.data(), row, static_cast<size_t>(n) * sizeof(float));
      row = copied.data();
    }
    out[i] = choose_token(row, static_cast<int32_t>(n), rows[i], scratch);
  }
}

void Backend::apply_penalties(const TensorView& logits, const PenaltyRow* rows, int32_t num_rows,
                              const PenaltyToken* tokens, int32_t num_tokens) {
  TS_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && logits.stride(1) == 1)
      << "apply_penalties to " << logits.debug_string();
  const int64_t n = logits.dim(1);
  std::vector<float> copied;
  for (int32_t i = 0; i < num_rows; ++i) {
    const PenaltyRow& r = rows[i];
    TS_CHECK(r.row >= 0 && r.row < logits.dim(0) && r.begin >= 0 && r.begin <= r.end &&
             r.end <= num_tokens)
        << "penalty row " << r.row << " with tokens [" << r.begin << ", " << r.end << ")";
    for (int32_t j = r.begin; j < r.end; ++j) {
      TS_CHECK(tokens[j].token >= 0 && tokens[j].token < n)
          << "penalised token " << tokens[j].token;
    }
    float* row = logits.ptr<float>() + r.row * logits.stride(0);
    if (logits.device == DeviceKind::kCpu) {
      tierserve::apply_penalties(row, r, tokens);
      continue;
    }
    copied.resize(static_cast<size_t>(n));
    copy(copied.data(), row, static_cast<size_t>(n) * sizeof(float));
    tierserve::apply_penalties(copied.data(), r, tokens);
    copy(row, copied.data(), static_cast<size_t>(n) * sizeof(float));
  }
}

}  // namespace tierserve

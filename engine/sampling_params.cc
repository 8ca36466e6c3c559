#include "engine/sampling_params.h"

#include <string>

namespace tierserve {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0)) {
    return invalid_argument("temperature must be >= 0, got " + std::to_string(temperature));
  }
  if (!(top_p > 0.0 && top_p <= 1.0)) {
    return invalid_argument("top_p must be in (0, 1], got " + std::to_string(top_p));
  }
  if (top_k < -1)
    return invalid_argument("top_k must be -1, 0 or positive, got " + std::to_string(top_k));
  if (!(min_p >= 0.0 && min_p <= 1.0)) {
    return invalid_argument("min_p must be in [0, 1], got " + std::to_string(min_p));
  }
  if (!(repetition_penalty > 0.0)) {
    return invalid_argument("repetition_penalty must be > 0, got " +
                            std::to_string(repetition_penalty));
  }
  if (!(presence_penalty >= -2.0 && presence_penalty <= 2.0)) {
    return invalid_argument("presence_penalty must be in [-2, 2], got " +
                            std::to_string(presence_penalty));
  }
  if (!(frequency_penalty >= -2.0 && frequency_penalty <= 2.0)) {
    return invalid_argument("frequency_penalty must be in [-2, 2], got " +
                            std::to_string(frequency_penalty));
  }
  if (n < 1 || n > 128) {
    return invalid_argument("n must be in [1, 128], got " + std::to_string(n));
  }
  if (max_tokens < 1) {
    return invalid_argument("max_tokens must be at least 1, got " + std::to_string(max_tokens));
  }
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return invalid_argument("min_tokens must be in [0, max_tokens], got " +
                            std::to_string(min_tokens));
  }
  if (logprobs && (*logprobs < 0 || *logprobs > 20)) {
    return invalid_argument("logprobs must be in [0, 20], got " + std::to_string(*logprobs));
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0) return invalid_argument("stop_token_ids must be >= 0, got " + std::to_string(id));
  }
  return Status::ok();
}

void apply_generation_defaults(const GenerationDefaults& d, const SamplingFieldsGiven& given,
                               SamplingParams* p) {
  if (d.temperature && !given.temperature) p->temperature = *d.temperature;
  if (d.top_p && !given.top_p) p->top_p = *d.top_p;
  if (d.top_k && !given.top_k) p->top_k = *d.top_k;
  if (d.min_p && !given.min_p) p->min_p = *d.min_p;
  if (d.repetition_penalty && !given.repetition_penalty) {
    p->repetition_penalty = *d.repetition_penalty;
  }
  if (d.max_new_tokens && !given.max_tokens) p->max_tokens = *d.max_new_tokens;
}

}  // namespace tierserve

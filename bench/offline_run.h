// One offline decode run through LlmEngine (no HTTP), shared by `tierserve bench decode` and
// `tierserve bench offload`: `batch` requests of random prompts (optionally behind a shared
// prefix) submitted at once, EOS ignored, stepped to completion. It measures what DESIGN.md §7
// asks of a decode benchmark: time to first token, decode tokens/s over the steps that only
// decode, and per step the weight bytes streamed and the time spent waiting for them.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/llm_engine.h"

namespace tierserve::bench {

struct DecodeWorkload {
  int32_t batch = 1;
  int32_t input_len = 128;
  int32_t output_len = 128;
  int32_t shared_prefix_len = 0;  // tokens of one prefix common to every prompt
  uint32_t seed = 0;
};

struct DecodeRun {
  double seconds = 0;          // submission to the last token
  std::vector<double> ttft_s;  // per request: submission to its first token
  double decode_seconds = 0;   // in steps that only decoded
  int64_t decode_steps = 0;
  int64_t decode_tokens = 0;     // tokens those steps produced
  int64_t output_tokens = 0;     // all generated tokens
  double mean_decode_batch = 0;  // sequences per decode-only step
  // Per decode-only step, averaged: weight bytes streamed into the device tier (host -> device
  // copies and disk -> device reads) and seconds waited for them.
  double streamed_bytes_per_step = 0;
  double host_bytes_per_step = 0, disk_bytes_per_step = 0;
  double stall_seconds_per_step = 0;
  int64_t prefix_hit_tokens = 0;  // prompt tokens served from the prefix cache
  double decode_tokens_per_s() const {
    return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0;
  }
  double mean_ttft_s() const {
    double sum = 0;
    for (double t : ttft_s) sum += t;
    return ttft_s.empty() ? 0 : sum / static_cast<double>(ttft_s.size());
  }
  double step_seconds() const {
    return decode_steps > 0 ? decode_seconds / static_cast<double>(decode_steps) : 0;
  }
};

DecodeRun run_decode(LlmEngine& engine, const DecodeWorkload& w);

}  // namespace tierserve::bench

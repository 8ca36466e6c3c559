#include "bench/offline_run.h"

#include <chrono>
#include <random>

namespace tierserve::bench {

DecodeRun run_decode(LlmEngine& engine, const DecodeWorkload& w) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  std::mt19937 rng(w.seed);
  const uint32_t vocab = static_cast<uint32_t>(engine.config().vocab_size);
  std::vector<int32_t> prefix(static_cast<size_t>(w.shared_prefix_len));
  for (int32_t& t : prefix) t = static_cast<int32_t>(rng() % vocab);
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;
  p.max_tokens = w.output_len;
  const EngineStats before = engine.stats();
  const EngineLoad load0 = engine.load();
  std::vector<std::shared_ptr<RequestStream>> streams;
  const Clock::time_point t0 = Clock::now();
  for (int32_t i = 0; i < w.batch; ++i) {
    std::vector<int32_t> prompt = prefix;
    for (int32_t k = 0; k < w.input_len; ++k) prompt.push_back(static_cast<int32_t>(rng() % vocab));
    streams.push_back(engine.add_request(std::move(prompt), p).value());
  }
  DecodeRun r;
  r.ttft_s.assign(streams.size(), -1);
  int64_t decode_seqs = 0;
  double host = 0, disk = 0, stall = 0;
  for (;;) {
    const EngineStats s0 = engine.stats();
    const EngineLoad l0 = engine.load();
    const Clock::time_point ts = Clock::now();
    if (!engine.step()) break;
    const double dt = since(ts);
    const EngineStats& s1 = engine.stats();
    const EngineLoad l1 = engine.load();
    const int64_t seqs = s1.scheduled_seqs - s0.scheduled_seqs;
    if (seqs > 0 && s1.scheduled_tokens - s0.scheduled_tokens == seqs) {  // only decodes
      r.decode_seconds += dt;
      r.decode_tokens += seqs;
      ++r.decode_steps;
      decode_seqs += seqs;
      host += static_cast<double>(l1.bytes_host_to_device - l0.bytes_host_to_device);
      disk += static_cast<double>(l1.bytes_disk_to_device - l0.bytes_disk_to_device);
      stall += l1.weight_stall_seconds - l0.weight_stall_seconds;
    }
    const double now = since(t0);
    for (size_t i = 0; i < streams.size(); ++i) {
      while (auto out = streams[i]->poll()) {
        if (r.ttft_s[i] < 0 && !out->token_ids.empty()) r.ttft_s[i] = now;
      }
    }
  }
  r.seconds = since(t0);
  const EngineStats& after = engine.stats();
  r.output_tokens = after.generated_tokens - before.generated_tokens;
  if (r.decode_steps > 0) {
    const double n = static_cast<double>(r.decode_steps);
    r.mean_decode_batch = static_cast<double>(decode_seqs) / n;
    r.host_bytes_per_step = host / n;
    r.disk_bytes_per_step = disk / n;
    r.streamed_bytes_per_step = (host + disk) / n;
    r.stall_seconds_per_step = stall / n;
  }
  r.prefix_hit_tokens = engine.load().prefix_hit_tokens - load0.prefix_hit_tokens;
  return r;
}

}  // namespace tierserve::bench

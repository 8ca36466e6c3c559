// CPU decode and prefill throughput on a --load-format dummy model of a real shape, each figure
// next to its physical bound:
// - decode tokens/s vs the memory-bandwidth bound: read bandwidth (measured here, same threads)
//   divided by the weight bytes one decode step reads;
// - prefill tokens/s vs the same memory bound and vs a compute bound: 2 x decoder parameters
//   FLOPs per token at the GEMM throughput measured here on the model's own projection shapes
//   (attention FLOPs are not counted, so the ratio slightly understates efficiency).
// Medians over repeated runs; each ratio is the median of ratios taken within one run, with the
// bound measured right next to the figure. Usage:
//   cpu_inference_bench MODEL_DIR [--threads N] [--repeats R] [--decode-tokens N]
//                       [--prefill-tokens N] [--markdown FILE]
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "common/topology.h"
#include "common/units.h"
#include "engine/llm_engine.h"

namespace tierserve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Sums n words with 256-bit loads (the widest this baseline-compiled program can rely on where
// the CPU has AVX2); the GEMV kernels stream weights with loads at least this wide.
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t* p, int64_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) sum += p[i];
  return sum;
}

uint64_t sum_words(const uint64_t* p, int64_t n) {
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(p, n);
  uint64_t s0 = 0, s1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    s0 += p[i];
    s1 += p[i + 1];
  }
  return s0 + s1 + (i < n ? p[i] : 0);
}

// Read bandwidth of a buffer far larger than the caches, summed by the threads of a pool like
// the backend's: the physical bound of weight streaming on this machine.
class ReadBandwidth {
 public:
  explicit ReadBandwidth(int threads) : pool_(threads, &topology_) {
    words_ = static_cast<int64_t>((1ull << 30) / sizeof(uint64_t));
    buf_ = static_cast<uint64_t*>(std::aligned_alloc(64, (1ull << 30)));
    for (int64_t i = 0; i < words_; ++i) buf_[i] = static_cast<uint64_t>(i);
    measure();  // warm up: page faults, frequency
  }
  ~ReadBandwidth() { std::free(buf_); }

  // One pass over the buffer, in bytes/s.
  double measure() {
    std::atomic<uint64_t> total{0};
    auto t0 = Clock::now();
    pool_.parallel_for(words_, 1 << 20, [&](int64_t b, int64_t e) {
      total.fetch_add(sum_words(buf_ + b, e - b), std::memory_order_relaxed);
    });
    const double t = seconds_since(t0);
    sink_ = sink_ + total.load();
    return static_cast<double>(words_) * sizeof(uint64_t) / t;
  }

 private:
  Topology topology_;
  ThreadPool pool_;
  uint64_t* buf_ = nullptr;
  int64_t words_ = 0;
  volatile uint64_t sink_ = 0;
};

// GEMM throughput of the backend on one decoder layer's own projections (q, k, v, o, gate, up,
// down) at m = `tokens` rows, in the model's weight dtype: total FLOPs over the summed median
// time of each shape. This is the compute bound of prefill for this model on this machine.
double measure_gemm_flops(Backend* backend, const ModelConfig& c, int64_t tokens, int repeats) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t q = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t shapes[][2] = {{q, d}, {kv, d}, {kv, d}, {d, q}, {f, d}, {f, d}, {d, f}};  // n, k
  const int64_t max_k = std::max({d, f, q}), max_n = std::max({d, f, q});
  std::vector<float> x(static_cast<size_t>(tokens * max_k), 0.01f);
  std::vector<float> y(static_cast<size_t>(tokens * max_n));
  // Weight values do not change the time (zeros are not denormals); only the dtype matters.
  std::vector<uint8_t> w(static_cast<size_t>(max_n * max_k) * dtype_size(c.dtype));
  double flops = 0, seconds = 0;
  for (const auto& shape : shapes) {
    const int64_t n = shape[0], k = shape[1];
    TensorView xv = TensorView::contiguous(x.data(), DType::kF32, {tokens, k});
    TensorView wv = TensorView::contiguous(w.data(), c.dtype, {n, k});
    TensorView yv = TensorView::contiguous(y.data(), DType::kF32, {tokens, n});
    std::vector<double> times;
    for (int r = 0; r < repeats + 1; ++r) {
      auto t0 = Clock::now();
      backend->gemm(xv, wv, nullptr, yv);
      backend->synchronize();
      if (r > 0) times.push_back(seconds_since(t0));  // the first call creates the primitive
    }
    flops += 2.0 * static_cast<double>(tokens * n * k);
    seconds += median(times);
  }
  return flops / seconds;
}

struct Args {
  std::string model_dir;
  int threads = 0;
  int repeats = 5;
  int decode_tokens = 32;
  int prefill_tokens = 256;
  std::string markdown;
};

int run(const Args& a) {
  EngineOptions options;
  options.load_format = LoadFormat::kDummy;
  options.backend.num_threads = a.threads;
  options.max_model_len = a.prefill_tokens + a.decode_tokens + 8;
  options.max_num_batched_tokens = a.prefill_tokens;
  auto engine_or = LlmEngine::create(a.model_dir, options);
  if (!engine_or.is_ok()) {
    std::fprintf(stderr, "error: %s\n", engine_or.status().message().c_str());
    return 1;
  }
  LlmEngine& engine = *engine_or.value();
  const ModelConfig& c = engine.config();
  const int threads = a.threads > 0 ? a.threads : Topology().num_cores();

  // Bytes one decode step reads: every weight but the embedding table (one row is read), plus
  // the lm_head, which is the embedding table again when tied.
  const uint64_t elem = dtype_size(c.dtype);
  const uint64_t embed_bytes = static_cast<uint64_t>(c.vocab_size) * c.hidden_size * elem;
  uint64_t step_bytes = engine.weight_bytes() - embed_bytes;
  if (c.tie_word_embeddings) step_bytes += embed_bytes;
  // Prefill multiplies every token by every decoder weight; the embedding is a lookup and the
  // lm_head runs for the last token only.
  uint64_t decoder_bytes = engine.weight_bytes() - embed_bytes;
  if (!c.tie_word_embeddings) decoder_bytes -= embed_bytes;
  const double decoder_params = static_cast<double>(decoder_bytes) / static_cast<double>(elem);

  // Bounds are measured in every repeat right next to the figure they bound, and each figure's
  // ratio is taken within its repeat: on a shared machine the bandwidth drifts between repeats.
  ReadBandwidth read_bandwidth(threads);
  auto backend = create_backend(options.backend);

  std::vector<int32_t> short_prompt(16), long_prompt(static_cast<size_t>(a.prefill_tokens));
  for (size_t i = 0; i < long_prompt.size(); ++i) {
    long_prompt[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(c.vocab_size));
  }
  std::copy(long_prompt.begin(), long_prompt.begin() + 16, short_prompt.begin());
  SamplingParams p;
  p.temperature = 0.0;
  p.ignore_eos = true;

  std::vector<double> decode_rates, prefill_rates, bandwidths, gemm_rates;
  std::vector<double> decode_ratios, prefill_compute_ratios, prefill_memory_ratios;
  std::fprintf(stderr, "running %d repeats...\n", a.repeats);
  for (int r = 0; r < a.repeats + 1; ++r) {
    // Decode: the time of N more tokens after the same prefill.
    const double bandwidth = read_bandwidth.measure();
    p.max_tokens = 1;
    auto t0 = Clock::now();
    (void)engine.generate(short_prompt, p);
    double t_prefill_only = seconds_since(t0);
    p.max_tokens = 1 + a.decode_tokens;
    t0 = Clock::now();
    (void)engine.generate(short_prompt, p);
    double t_with_decode = seconds_since(t0);
    // Prefill: one step over the long prompt (max_num_batched_tokens = prefill_tokens).
    const double gemm_flops = measure_gemm_flops(backend.value().get(), c, a.prefill_tokens, 1);
    p.max_tokens = 1;
    t0 = Clock::now();
    (void)engine.generate(long_prompt, p);
    double t_long = seconds_since(t0);
    if (r == 0) continue;  // warm-up
    const double decode = a.decode_tokens / std::max(t_with_decode - t_prefill_only, 1e-9);
    const double prefill = a.prefill_tokens / t_long;
    const double decode_bound = bandwidth / static_cast<double>(step_bytes);
    decode_rates.push_back(decode);
    prefill_rates.push_back(prefill);
    bandwidths.push_back(bandwidth);
    gemm_rates.push_back(gemm_flops);
    decode_ratios.push_back(decode / decode_bound);
    prefill_compute_ratios.push_back(prefill / (gemm_flops / (2.0 * decoder_params)));
    prefill_memory_ratios.push_back(prefill / (decode_bound * a.prefill_tokens));
  }
  const double decode = median(decode_rates), prefill = median(prefill_rates);
  const double bandwidth = median(bandwidths), gemm_flops = median(gemm_rates);
  const double decode_bound = bandwidth / static_cast<double>(step_bytes);
  const double prefill_mem_bound = decode_bound * a.prefill_tokens;
  const double prefill_compute_bound = gemm_flops / (2.0 * decoder_params);

  char table[4096];
  std::snprintf(table, sizeof(table),
                "| figure | value | bound | ratio |\n"
                "|---|---|---|---|\n"
                "| read bandwidth (%d threads) | %.2f GB/s | - | - |\n"
                "| GEMM, one layer's projections at m=%d | %.1f GFLOP/s | - | - |\n"
                "| weights read per decode step | %s | - | - |\n"
                "| decode, batch 1 | %.2f tok/s | %.2f tok/s (memory) | %.1f%% |\n"
                "| prefill, %d tokens | %.1f tok/s | %.1f tok/s (GEMM compute) | %.1f%% |\n"
                "| prefill, %d tokens | %.1f tok/s | %.1f tok/s (memory) | %.1f%% |\n",
                threads, bandwidth / 1e9, a.prefill_tokens, gemm_flops / 1e9,
                format_bytes(step_bytes).c_str(), decode, decode_bound,
                100.0 * median(decode_ratios), a.prefill_tokens, prefill, prefill_compute_bound,
                100.0 * median(prefill_compute_ratios), a.prefill_tokens, prefill,
                prefill_mem_bound, 100.0 * median(prefill_memory_ratios));
  std::printf(
      "model: %s (%s, %d layers, dummy weights), medians of %d runs (each ratio is the "
      "median of per-run ratios)\n%s",
      c.architecture_name.c_str(), std::string(dtype_name(c.dtype)).c_str(), c.num_layers,
      a.repeats, table);
  if (!a.markdown.empty()) {
    std::ofstream out(a.markdown, std::ios::app);
    out << table;
  }
  return 0;
}

}  // namespace
}  // namespace tierserve

int main(int argc, char** argv) {
  tierserve::Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--threads") {
      a.threads = std::atoi(next().c_str());
    } else if (arg == "--repeats") {
      a.repeats = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--decode-tokens") {
      a.decode_tokens = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--prefill-tokens") {
      a.prefill_tokens = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--markdown") {
      a.markdown = next();
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "error: unknown flag %s\n", arg.c_str());
      return 2;
    } else {
      a.model_dir = arg;
    }
  }
  if (a.model_dir.empty()) {
    std::fprintf(stderr,
                 "usage: cpu_inference_bench MODEL_DIR [--threads N] [--repeats R] "
                 "[--decode-tokens N] [--prefill-tokens N] [--markdown FILE]\n");
    return 2;
  }
  return tierserve::run(a);
}

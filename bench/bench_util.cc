#include "bench/bench_util.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"

namespace tierserve::bench {
namespace {

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

}  // namespace

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

ReadBandwidth::ReadBandwidth(int threads) : pool_(threads, &topology_) {
  words_ = static_cast<int64_t>((1ull << 30) / sizeof(uint64_t));
  buf_ = static_cast<uint64_t*>(std::aligned_alloc(64, (1ull << 30)));
  for (int64_t i = 0; i < words_; ++i) buf_[i] = static_cast<uint64_t>(i);
  measure();  // warm up: page faults, frequency
}

ReadBandwidth::~ReadBandwidth() { std::free(buf_); }

double ReadBandwidth::measure() {
  std::atomic<uint64_t> total{0};
  auto t0 = Clock::now();
  pool_.parallel_for(words_, 1 << 20, [&](int64_t b, int64_t e) {
    total.fetch_add(sum_words(buf_ + b, e - b), std::memory_order_relaxed);
  });
  const double t = seconds_since(t0);
  sink_ = sink_ + total.load();
  return static_cast<double>(words_) * sizeof(uint64_t) / t;
}

double measure_gemm_flops(Backend* backend, const ModelConfig& c, int64_t tokens, int repeats,
                          const ResolvedWeights& weights) {
  // Layer 0's projections as they load, each a view whose data is set once memory is had.
  struct Shape {
    TensorView w;
    uint64_t bytes;
  };
  std::vector<Shape> shapes;
  const DeviceKind dev = backend->device();
  for (size_t i = 0; i < weights.specs.size(); ++i) {
    const WeightSpec& s = weights.specs[i];
    if (s.unit != layer_unit(0) || !is_gemm_weight(c, s)) continue;
    const DType dtype = weights.dtypes[i];
    shapes.push_back({dtype == DType::kQ4 ? q4_view(nullptr, weights.q4[i], dev)
                      : dtype == DType::kQ8
                          ? q8_view(nullptr, weights.q8[i], dev)
                          : TensorView::contiguous(nullptr, dtype, {s.shape[0], s.shape[1]}, dev),
                      resolved_spec_bytes(weights, i)});
  }
  int64_t max_k = 0, max_n = 0;
  size_t w_bytes = 0;
  for (const Shape& s : shapes) {
    max_n = std::max(max_n, s.w.shape[0]);
    max_k = std::max(max_k, s.w.shape[1]);
    w_bytes = std::max<size_t>(w_bytes, s.bytes);
  }
  // In the backend's own memory (the GPU's on CUDA). Weight values do not change the time
  // (zeros are not denormals; zero Q4 and Q8 blobs are valid); only the dtype matters.
  const size_t x_bytes = static_cast<size_t>(tokens * max_k) * sizeof(float);
  const size_t y_bytes = static_cast<size_t>(tokens * max_n) * sizeof(float);
  auto x_or = backend->allocate(x_bytes), y_or = backend->allocate(y_bytes),
       w_or = backend->allocate(w_bytes);
  auto release = [&] {
    for (auto* r : {&x_or, &y_or, &w_or}) {
      if (r->is_ok()) backend->deallocate(r->value());
    }
  };
  if (shapes.empty() || !x_or.is_ok() || !y_or.is_ok() || !w_or.is_ok()) {
    release();
    return 0;
  }
  {
    const std::vector<float> x(static_cast<size_t>(tokens * max_k), 0.01f);
    backend->copy(x_or.value(), x.data(), x_bytes);
    const std::vector<uint8_t> w(w_bytes);
    backend->copy(w_or.value(), w.data(), w_bytes);
  }
  double flops = 0, seconds = 0;
  for (const Shape& s : shapes) {
    const int64_t n = s.w.shape[0], k = s.w.shape[1];
    TensorView xv = TensorView::contiguous(x_or.value(), DType::kF32, {tokens, k}, dev);
    TensorView wv = s.w;
    wv.data = w_or.value();
    TensorView yv = TensorView::contiguous(y_or.value(), DType::kF32, {tokens, n}, dev);
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
  release();
  return flops / seconds;
}

StepCost step_cost(const ModelConfig& c, const ResolvedWeights& w) {
  // A decode step reads every weight but the embedding table (one row is read), plus the
  // lm_head, which is the embedding table again when tied. Prefill multiplies every token by
  // every decoder weight; the lm_head runs for the last token only.
  StepCost cost;
  for (size_t i = 0; i < w.specs.size(); ++i) {
    const int32_t unit = w.specs[i].unit;
    if (unit != kEmbeddingUnit || c.tie_word_embeddings) {
      cost.decode_bytes += resolved_spec_bytes(w, i);
    }
    if (unit != kEmbeddingUnit && unit != head_unit(c)) {
      double params = 1;
      for (int64_t d : w.specs[i].shape) params *= static_cast<double>(d);
      cost.decoder_params += params;
    }
  }
  return cost;
}

}  // namespace tierserve::bench

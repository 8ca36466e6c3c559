// Shared pieces of the benchmark programs: timing, medians, and the physical bounds that every
// figure is printed next to (memory read bandwidth, GEMM throughput on the model's shapes).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "common/topology.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "kernels/backend.h"

namespace tierserve::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v);

// Read bandwidth of a 1 GiB buffer, far larger than the caches, summed by the threads of a pool
// like the backend's: the physical bound of weight streaming on this machine.
class ReadBandwidth {
 public:
  explicit ReadBandwidth(int threads);
  ~ReadBandwidth();
  ReadBandwidth(const ReadBandwidth&) = delete;
  ReadBandwidth& operator=(const ReadBandwidth&) = delete;
  // One pass over the buffer, in bytes/s.
  double measure();

 private:
  Topology topology_;
  ThreadPool pool_;
  uint64_t* buf_ = nullptr;
  int64_t words_ = 0;
  volatile uint64_t sink_ = 0;
};

// GEMM throughput of `backend` on one decoder layer's own projections (q, k, v, o, gate, up,
// down) at m = `tokens` rows, each in the dtype it loads as (`weights`, from resolve_weights:
// 4-bit and 8-bit blobs through their own gemm): total FLOPs over the summed median time of each
// shape. The compute bound of prefill (and of large-batch decode) for this model.
// Buffers come from the backend (device memory on a GPU); 0 when they cannot be had.
double measure_gemm_flops(Backend* backend, const ModelConfig& c, int64_t tokens, int repeats,
                          const ResolvedWeights& weights);

// What one forward step must move and compute, from the model's weights as they load (4-bit
// blobs at their 4-bit size, GGUF tensors in the types they load as).
struct StepCost {
  uint64_t decode_bytes = 0;  // weights one decode step reads (embedding: one row; lm_head)
  double decoder_params = 0;  // parameters each token is multiplied by (no embedding/lm_head)
};
// `w`: resolve_weights() of the model (only headers and metadata are read).
StepCost step_cost(const ModelConfig& c, const ResolvedWeights& w);

}  // namespace tierserve::bench

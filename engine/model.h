// The decoder forward pass of the Llama family (Llama, Qwen2, Qwen3, Mistral, Baichuan, ChatGLM)
// over a batch of sequences and the paged KV cache (DESIGN.md §3). The model owns only activation
// buffers, allocated once at creation; weights come from a WeightProvider and KV from the pool.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "engine/model_config.h"
#include "engine/rope.h"
#include "kernels/backend.h"
#include "offload/weight_provider.h"

namespace tierserve {

// The inputs of one forward step, in host memory (Model::forward stages them on the backend).
using ForwardBatch = StepInputs;

class Model {
 public:
  // `backend` and `weights` must outlive the model. Buffers hold up to `max_num_tokens` tokens
  // per step and `max_logit_rows` logit rows; positions must stay below `max_positions`.
  static Result<std::unique_ptr<Model>> create(const ModelConfig& config, Backend* backend,
                                               WeightProvider* weights, int32_t max_num_tokens,
                                               int32_t max_logit_rows, int32_t max_positions);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  // Bytes of activation buffers allocated from the backend.
  uint64_t buffer_bytes() const { return buffer_bytes_; }
  // What buffer_bytes() will be for these limits, before any model exists (the planner's
  // device-tier reservation).
  static uint64_t buffer_bytes_for(const ModelConfig& config, int32_t max_num_tokens,
                                   int32_t max_logit_rows);

  // Runs every layer over the batch: writes the new tokens' K/V into `cache` and returns the
  // logits [batch.num_logit_rows, vocab_size] (f32; none when num_logit_rows is 0, a step of
  // prefill chunks only), valid until the next forward. Fails only
  // when a weight unit cannot be acquired.
  Result<TensorView> forward(const ForwardBatch& batch, const KvCacheView& cache);
  // forward() of inputs already staged (Backend::stage_step), issuing only ops: what a graph
  // captures (ModelRunner).
  Result<TensorView> forward_staged(const StepInputs& staged, const KvCacheView& cache);

 private:
  Model(const ModelConfig& config, Backend* backend, WeightProvider* weights,
        int32_t max_num_tokens, int32_t max_logit_rows, int32_t max_positions);
  Status allocate_buffers();
  Status run_layer(int32_t layer, const WeightUnit& w, const ForwardBatch& batch,
                   const KvCacheView& cache, int32_t num_tokens, bool first_layer);

  ModelConfig config_;
  Backend* backend_;
  WeightProvider* weights_;
  int32_t max_num_tokens_;
  int32_t max_logit_rows_;
  RopeCache rope_;

  // Activation buffers, [max_num_tokens, width] f32 unless noted, and constants; one
  // allocation.
  void* arena_ = nullptr;
  uint64_t buffer_bytes_ = 0;
  float* residual_ = nullptr;    // [T, d] running hidden state
  float* x_ = nullptr;           // [T, d] normed input of a block, then its output
  float* q_ = nullptr;           // [T, num_heads * head_dim]
  float* k_ = nullptr;           // [T, num_kv_heads * head_dim]
  float* v_ = nullptr;           // [T, num_kv_heads * head_dim]
  float* attn_ = nullptr;        // [T, num_heads * head_dim]
  float* gate_ = nullptr;        // [T, f]
  float* up_ = nullptr;          // [T, f]
  float* last_ = nullptr;        // [R, d] residual rows that produce logits
  float* last_out_ = nullptr;    // [R, d] their last block output, then their final norm
  float* logits_ = nullptr;      // [R, vocab]
  float* alibi_ = nullptr;       // [num_heads] ALiBi slopes, or null without ALiBi
  float* vocab_mask_ = nullptr;  // [vocab] 0, then -inf past the tokenizer's ids; or null
};

}  // namespace tierserve

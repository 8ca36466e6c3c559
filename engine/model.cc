#include "engine/model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "engine/alibi.h"
#include "engine/model_weights.h"

namespace tierserve {
namespace {

TensorView f32(float* p, int64_t rows, int64_t cols, DeviceKind device) {
  return TensorView::contiguous(p, DType::kF32, {rows, cols}, device);
}

const TensorView* optional(const TensorView& t) { return t.data != nullptr ? &t : nullptr; }

}  // namespace

Model::Model(const ModelConfig& config, Backend* backend, WeightProvider* weights,
             int32_t max_num_tokens, int32_t max_logit_rows, int32_t max_positions)
    : config_(config),
      backend_(backend),
      weights_(weights),
      max_num_tokens_(max_num_tokens),
      max_logit_rows_(max_logit_rows),
      // ALiBi models get a one-position dummy table: rope never runs.
      rope_(config.alibi ? 2 : config.rotary_dim, config.rope_theta, config.rope_scaling,
            config.alibi ? 1 : max_positions,
            config.rope_interleaved ? RopeStyle::kInterleaved : RopeStyle::kNeox) {}

Model::~Model() {
  if (arena_ != nullptr) backend_->deallocate(arena_);
}

Result<std::unique_ptr<Model>> Model::create(const ModelConfig& config, Backend* backend,
                                             WeightProvider* weights, int32_t max_num_tokens,
                                             int32_t max_logit_rows, int32_t max_positions) {
  if (max_num_tokens <= 0 || max_logit_rows <= 0 || max_positions <= 0) {
    return invalid_argument("model buffers need positive token, logit-row and position counts");
  }
  if (weights->num_units() != config.num_layers + 2) {
    return internal_error("weight provider has " + std::to_string(weights->num_units()) +
                          " units, the model needs " + std::to_string(config.num_layers + 2));
  }
  std::unique_ptr<Model> model(
      new Model(config, backend, weights, max_num_tokens, max_logit_rows, max_positions));
  TS_RETURN_IF_ERROR(model->allocate_buffers());
  return model;
}

namespace {

// Floats of each buffer, in the order of Model's members residual_ ... vocab_mask_: the
// activations, then the ALiBi slopes and the padded-vocabulary mask (empty when unused).
std::array<int64_t, 13> buffer_floats(const ModelConfig& c, int64_t t, int64_t r) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t qd = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kvd = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t slopes = c.alibi ? c.num_heads : 0;
  const bool masked = c.tokenizer_vocab_size > 0 && c.tokenizer_vocab_size < c.vocab_size;
  return {t * d,
          t * d,
          t * qd,
          t * kvd,
          t * kvd,
          t * qd,
          t * f,
          t * f,
          r * d,
          r * d,
          r * c.vocab_size,
          slopes,
          masked ? c.vocab_size : 0};
}

size_t aligned_bytes(int64_t floats) {
  return (static_cast<size_t>(floats) * sizeof(float) + 63) & ~size_t{63};
}

}  // namespace

uint64_t Model::buffer_bytes_for(const ModelConfig& config, int32_t max_num_tokens,
                                 int32_t max_logit_rows) {
  uint64_t total = 0;
  for (int64_t s : buffer_floats(config, max_num_tokens, max_logit_rows)) {
    total += aligned_bytes(s);
  }
  return total;
}

Status Model::allocate_buffers() {
  const std::array<int64_t, 13> sizes = buffer_floats(config_, max_num_tokens_, max_logit_rows_);
  float** ptrs[] = {&residual_, &x_,    &q_,        &k_,      &v_,     &attn_,      &gate_,
                    &up_,       &last_, &last_out_, &logits_, &alibi_, &vocab_mask_};
  const size_t total = buffer_bytes_for(config_, max_num_tokens_, max_logit_rows_);
  TS_ASSIGN_OR_RETURN(arena_, backend_->allocate(total));
  buffer_bytes_ = total;
  char* p = static_cast<char*>(arena_);
  for (size_t i = 0; i < std::size(sizes); ++i) {
    *ptrs[i] = sizes[i] > 0 ? reinterpret_cast<float*>(p) : nullptr;
    p += aligned_bytes(sizes[i]);
  }
  // The constant buffers, written once.
  if (alibi_ != nullptr) {
    const std::vector<float> slopes = alibi_slopes(config_.num_heads);
    backend_->copy(alibi_, slopes.data(), slopes.size() * sizeof(float));
  }
  if (vocab_mask_ != nullptr) {
    std::vector<float> mask(static_cast<size_t>(config_.vocab_size), 0.0f);
    std::fill(mask.begin() + config_.tokenizer_vocab_size, mask.end(),
              -std::numeric_limits<float>::infinity());
    backend_->copy(vocab_mask_, mask.data(), mask.size() * sizeof(float));
  }
  return Status::ok();
}

Status Model::run_layer(int32_t layer, const WeightUnit& unit, const ForwardBatch& batch,
                        const KvCacheView& cache, int32_t n, bool first_layer) {
  const std::vector<TensorView>& w = unit.tensors;
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, f = c.intermediate_size, hd = c.head_dim;
  const int64_t qd = c.num_heads * hd, kvd = c.num_kv_heads * hd;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const DeviceKind dev = backend_->device();
  TensorView residual = f32(residual_, n, d, dev), x = f32(x_, n, d, dev);

  // Attention block. The previous block's output (in x) joins the residual stream here.
  if (first_layer) {
    backend_->rmsnorm(residual, w[kInputNorm], eps, x);
  } else {
    backend_->add_rmsnorm(residual, x, w[kInputNorm], eps, x);
  }
  TensorView q = f32(q_, n, qd, dev), k = f32(k_, n, kvd, dev), v = f32(v_, n, kvd, dev);
  backend_->gemm(x, w[kQProj], optional(w[kQBias]), q);
  backend_->gemm(x, w[kKProj], optional(w[kKBias]), k);
  backend_->gemm(x, w[kVProj], optional(w[kVBias]), v);
  if (c.qk_norm) {
    backend_->rmsnorm(f32(q_, n * c.num_heads, hd, dev), w[kQNorm], eps,
                      f32(q_, n * c.num_heads, hd, dev));
    backend_->rmsnorm(f32(k_, n * c.num_kv_heads, hd, dev), w[kKNorm], eps,
                      f32(k_, n * c.num_kv_heads, hd, dev));
  }
  TensorView q3 = TensorView::contiguous(q_, DType::kF32, {n, c.num_heads, hd}, dev);
  TensorView k3 = TensorView::contiguous(k_, DType::kF32, {n, c.num_kv_heads, hd}, dev);
  TensorView v3 = TensorView::contiguous(v_, DType::kF32, {n, c.num_kv_heads, hd}, dev);
  if (!c.alibi) backend_->rope(q3, k3, batch.positions, rope_.table());
  backend_->write_kv(layer, k3, v3, batch.attn, cache);
  AttentionParams params;
  params.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  params.sliding_window = c.layer_sliding_window[static_cast<size_t>(layer)];
  params.alibi_slopes = alibi_;
  TensorView attn3 = TensorView::contiguous(attn_, DType::kF32, {n, c.num_heads, hd}, dev);
  backend_->paged_attention(layer, q3, batch.attn, cache, params, attn3);
  backend_->gemm(f32(attn_, n, qd, dev), w[kOProj], optional(w[kOBias]), x);

  // MLP block.
  backend_->add_rmsnorm(residual, x, w[kPostAttnNorm], eps, x);
  TensorView gate = f32(gate_, n, f, dev), up = f32(up_, n, f, dev);
  backend_->gemm(x, w[kGateProj], optional(w[kGateBias]), gate);
  backend_->gemm(x, w[kUpProj], optional(w[kUpBias]), up);
  backend_->silu_mul(gate, up, gate);
  backend_->gemm(gate, w[kDownProj], optional(w[kDownBias]), x);
  return Status::ok();
}

Result<TensorView> Model::forward(const ForwardBatch& host_batch, const KvCacheView& cache) {
  return forward_staged(backend_->stage_step(host_batch), cache);
}

Result<TensorView> Model::forward_staged(const StepInputs& batch, const KvCacheView& cache) {
  const int32_t n = batch.attn.num_tokens;
  TS_CHECK(n > 0 && n <= max_num_tokens_) << "step of " << n << " tokens";
  TS_CHECK(batch.num_logit_rows >= 0 && batch.num_logit_rows <= max_logit_rows_)
      << batch.num_logit_rows << " logit rows";
  const int64_t d = config_.hidden_size;
  const DeviceKind dev = backend_->device();

  TS_ASSIGN_OR_RETURN(const WeightUnit* embedding, weights_->acquire(kEmbeddingUnit));
  backend_->embedding(batch.token_ids, embedding->tensors[kEmbedTokens], f32(residual_, n, d, dev));
  weights_->release(kEmbeddingUnit);

  for (int32_t l = 0; l < config_.num_layers; ++l) {
    TS_ASSIGN_OR_RETURN(const WeightUnit* unit, weights_->acquire(layer_unit(l)));
    Status s = run_layer(l, *unit, batch, cache, n, l == 0);
    weights_->release(layer_unit(l));
    TS_RETURN_IF_ERROR(s);
  }

  // Only the rows that produce logits go through the final norm and the head.
  const int32_t r = batch.num_logit_rows;
  if (r == 0) return f32(logits_, 0, config_.vocab_size, dev);
  TensorView last = f32(last_, r, d, dev), last_out = f32(last_out_, r, d, dev);
  backend_->gather_rows(f32(residual_, n, d, dev), batch.logit_rows, last);
  backend_->gather_rows(f32(x_, n, d, dev), batch.logit_rows, last_out);
  TS_ASSIGN_OR_RETURN(const WeightUnit* head, weights_->acquire(head_unit(config_)));
  backend_->add_rmsnorm(last, last_out, head->tensors[kFinalNorm],
                        static_cast<float>(config_.rms_norm_eps), last_out);
  TensorView logits = f32(logits_, r, config_.vocab_size, dev);
  // A padded vocabulary's extra logits come out -inf: the mask is the head's bias.
  TensorView mask = TensorView::contiguous(vocab_mask_, DType::kF32, {config_.vocab_size}, dev);
  backend_->gemm(last_out, head->tensors[kLmHead], vocab_mask_ != nullptr ? &mask : nullptr,
                 logits);
  weights_->release(head_unit(config_));
  return logits;
}

}  // namespace tierserve

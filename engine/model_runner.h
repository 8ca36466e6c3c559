// ModelRunner: turns a StepPlan into one forward step (DESIGN.md §3): the plan's copy-on-write
// block copies, then token ids, positions, slot mapping and block tables in buffers allocated
// once, then Model::forward. Engine thread only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "engine/model.h"
#include "engine/scheduler.h"
#include "kernels/backend.h"
#include "memory/kv_pool.h"

namespace tierserve {

// The largest batch a decode-step graph is captured for; larger decode steps run eagerly.
inline constexpr int32_t kMaxGraphBatch = 256;
// The most suppressed stop ids a row's penalties carry to the backend; a request with more is
// sampled on the host.
inline constexpr int32_t kMaxPenaltyStopIds = 256;

class ModelRunner {
 public:
  // All pointers must outlive the runner. A step holds at most `max_num_tokens` tokens and
  // `max_num_seqs` sequences (the model's logit rows), each of at most `max_blocks_per_seq`
  // blocks.
  ModelRunner(Model* model, Backend* backend, KvPool* pool, int32_t max_num_tokens,
              int32_t max_num_seqs, int32_t max_blocks_per_seq);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Reserves the backend's step-input buffers and, where the backend's memory is not the
  // host's, a host buffer for the logits. With `graphs`, on a backend that has them, captures a
  // graph of the decode step for batch sizes 1, 2, 4, 8, 16, ... up to the limits and
  // kMaxGraphBatch (the weights must all be resident: a streamed layer waits on the host
  // mid-step); a capture that fails is logged and the runner stays eager. Start-up only; call
  // once before execute().
  Status init(bool graphs);
  // The limits init() reserves the backend's step buffers for (Backend::reserve_steps).
  static StepLimits step_limits(const ModelConfig& config, int32_t max_num_tokens,
                                int32_t max_num_seqs, int32_t max_blocks_per_seq,
                                int32_t block_size);

  // Runs `plan` (already committed by the scheduler: every scheduled sequence's blocks hold
  // its new tokens). Returns logits [rows, vocab] f32, one row per sequence whose last token ran
  // this step, in plan order; sampled()[r] is the index in plan.scheduled of row r. The logits
  // are in the backend's memory (device memory on a GPU): read them through host_row() or
  // argmax(). Valid until the next execute.
  Result<TensorView> execute(const StepPlan& plan);
  // Row r of the last step's logits in host memory. On a GPU the first call of a step copies all
  // rows back at once; the row may be modified (the sampler does).
  float* host_row(int32_t r);
  // out[i] = the arg-max token of row rows[i] of the last step's logits, reduced where they are
  // (on a GPU only the ids cross the bus).
  void argmax(std::span<const int32_t> rows, int32_t* out);
  // out[i] = the token Backend::sample_rows draws for rows[i] of the last step's logits.
  void sample(std::span<const SampleRow> rows, int32_t* out);
  // Applies penalties to the last step's logits where they are (before argmax and sample).
  void apply_penalties(std::span<const PenaltyRow> rows, std::span<const PenaltyToken> tokens);
  const std::vector<int32_t>& sampled() const { return sampled_; }

 private:
  Model* model_;
  Backend* backend_;
  KvPool* pool_;
  int32_t max_num_tokens_;
  int32_t max_num_seqs_;
  int32_t max_blocks_per_seq_;
  // Step inputs (host memory on the CPU backend), sized at construction.
  std::vector<int32_t> token_ids_;     // [max_num_tokens]
  std::vector<int32_t> positions_;     // [max_num_tokens]
  std::vector<int32_t> slot_mapping_;  // [max_num_tokens]
  std::vector<int32_t> query_start_;   // [max_num_seqs + 1]
  std::vector<int32_t> seq_lens_;      // [max_num_seqs]
  std::vector<int32_t> block_tables_;  // [max_num_seqs, max_blocks_per_seq]
  std::vector<int32_t> logit_rows_;    // [max_num_seqs]
  std::vector<int32_t> sampled_;       // [max_num_seqs]
  // Host copy of the logits when the backend's device memory is not the host's, else null.
  float* host_logits_ = nullptr;  // [max_num_seqs, vocab_size], Backend::allocate_pinned_host
  bool host_logits_pinned_ = false;
  // One captured decode step: `batch` sequences of one token each (padding rows past the real
  // ones), replayed as graph `id`; its logits land in `logits` [batch, vocab].
  struct Graph {
    int32_t batch = 0;
    int32_t id = -1;
    TensorView logits;
  };
  Status capture_graphs();
  // Makes rows [from, batch) padding: token 0 at position 0, slot -1, one key in block -1, its
  // own logit row. Sequence `s` then owns token s.
  void pad_decode_rows(int32_t from, int32_t batch);
  // The host arrays as a step of `t` tokens, `s` sequences and `rows` logit rows.
  ForwardBatch batch_of(int32_t t, int32_t s, int32_t rows);

  std::vector<Graph> graphs_;                // by ascending batch
  TensorView logits_;                        // the last step's logits, where the backend wrote them
  bool logits_on_host_ = false;              // host_logits_ holds them (or they are host memory)
  std::vector<float> host_logits_fallback_;  // when the backend has no pinned allocator
};

}  // namespace tierserve

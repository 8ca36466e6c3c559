#include "engine/model_runner.h"

#include <algorithm>

#include "common/check.h"
#include "common/logging.h"

namespace tierserve {

ModelRunner::ModelRunner(Model* model, Backend* backend, KvPool* pool, int32_t max_num_tokens,
                         int32_t max_num_seqs, int32_t max_blocks_per_seq)
    : model_(model),
      backend_(backend),
      pool_(pool),
      max_num_tokens_(max_num_tokens),
      max_num_seqs_(max_num_seqs),
      max_blocks_per_seq_(max_blocks_per_seq),
      token_ids_(static_cast<size_t>(max_num_tokens)),
      positions_(static_cast<size_t>(max_num_tokens)),
      slot_mapping_(static_cast<size_t>(max_num_tokens)),
      query_start_(static_cast<size_t>(max_num_seqs) + 1),
      seq_lens_(static_cast<size_t>(max_num_seqs)),
      block_tables_(static_cast<size_t>(max_num_seqs) * static_cast<size_t>(max_blocks_per_seq)),
      logit_rows_(static_cast<size_t>(max_num_seqs)) {
  sampled_.reserve(static_cast<size_t>(max_num_seqs));
}

ModelRunner::~ModelRunner() {
  if (host_logits_pinned_) backend_->free_pinned_host(host_logits_);
}

namespace {

// Batch sizes of the captured decode steps (vLLM's: 1, 2, 4, then multiples of 8).
std::vector<int32_t> graph_batch_sizes(int32_t limit) {
  std::vector<int32_t> sizes;
  for (int32_t b : {1, 2, 4}) {
    if (b <= limit) sizes.push_back(b);
  }
  for (int32_t b = 8; b <= limit && b <= kMaxGraphBatch; b += 8) sizes.push_back(b);
  return sizes;
}

}  // namespace

StepLimits ModelRunner::step_limits(const ModelConfig& config, int32_t max_num_tokens,
                                    int32_t max_num_seqs, int32_t max_blocks_per_seq,
                                    int32_t block_size) {
  StepLimits limits;
  limits.max_tokens = max_num_tokens;
  limits.max_seqs = max_num_seqs;
  limits.max_blocks_per_seq = max_blocks_per_seq;
  limits.vocab_size = config.vocab_size;
  // A row's distinct tokens: at most its whole sequence and the stop ids it suppresses, and at
  // most the vocabulary.
  const int64_t per_row =
      std::min<int64_t>(limits.vocab_size,
                        static_cast<int64_t>(max_blocks_per_seq) * block_size + kMaxPenaltyStopIds);
  limits.max_penalty_tokens = static_cast<int32_t>(max_num_seqs * per_row);
  return limits;
}

Status ModelRunner::init(bool graphs) {
  const StepLimits limits = step_limits(model_->config(), max_num_tokens_, max_num_seqs_,
                                        max_blocks_per_seq_, pool_->view().layout.block_size);
  TS_RETURN_IF_ERROR(backend_->reserve_steps(limits));
  if (backend_->device() == DeviceKind::kCpu) return Status::ok();
  const size_t floats =
      static_cast<size_t>(max_num_seqs_) * static_cast<size_t>(model_->config().vocab_size);
  TS_ASSIGN_OR_RETURN(void* pinned, backend_->allocate_pinned_host(floats * sizeof(float)));
  if (pinned != nullptr) {
    host_logits_ = static_cast<float*>(pinned);
    host_logits_pinned_ = true;
  } else {
    host_logits_fallback_.resize(floats);
    host_logits_ = host_logits_fallback_.data();
  }
  if (graphs && backend_->supports_graphs()) {
    Status s = capture_graphs();
    if (!s.is_ok()) {
      TS_LOG(Warning) << "decode steps run without graphs: " << s.to_string();
      graphs_.clear();
    }
  }
  return Status::ok();
}

void ModelRunner::pad_decode_rows(int32_t from, int32_t batch) {
  for (int32_t s = from; s < batch; ++s) {
    const size_t i = static_cast<size_t>(s);
    token_ids_[i] = 0;
    positions_[i] = 0;
    slot_mapping_[i] = -1;
    query_start_[i + 1] = s + 1;
    seq_lens_[i] = 1;
    block_tables_[i * static_cast<size_t>(max_blocks_per_seq_)] = -1;
    logit_rows_[i] = s;
  }
}

ForwardBatch ModelRunner::batch_of(int32_t t, int32_t s, int32_t rows) {
  ForwardBatch batch;
  batch.token_ids = token_ids_.data();
  batch.positions = positions_.data();
  batch.attn.num_seqs = s;
  batch.attn.num_tokens = t;
  batch.attn.query_start = query_start_.data();
  batch.attn.seq_lens = seq_lens_.data();
  batch.attn.block_tables = block_tables_.data();
  batch.attn.max_blocks_per_seq = max_blocks_per_seq_;
  batch.attn.slot_mapping = slot_mapping_.data();
  batch.logit_rows = logit_rows_.data();
  batch.num_logit_rows = rows;
  return batch;
}

Status ModelRunner::capture_graphs() {
  const KvCacheView& cache = pool_->view();
  for (int32_t b : graph_batch_sizes(std::min(max_num_seqs_, max_num_tokens_))) {
    // A batch of padding alone: nothing runs while capturing, and every replay restages it.
    query_start_[0] = 0;
    pad_decode_rows(0, b);
    const StepInputs staged = backend_->stage_step(batch_of(b, b, b));
    // One eager run first, so that lazy initialisation (module loading, cuBLAS's first call)
    // happens outside the capture; on padding alone it writes and reads no KV.
    TS_RETURN_IF_ERROR(model_->forward_staged(staged, cache).status());
    backend_->synchronize();
    TS_RETURN_IF_ERROR(backend_->begin_capture());
    Result<TensorView> logits = model_->forward_staged(staged, cache);
    Result<int32_t> id = backend_->end_capture();
    if (!logits.is_ok()) return logits.status().with_context("capturing a decode step");
    if (!id.is_ok()) {
      return id.status().with_context("capturing a decode step of " + std::to_string(b));
    }
    graphs_.push_back({b, id.value(), logits.value()});
  }
  TS_LOG(Info) << "captured decode-step graphs for " << graphs_.size() << " batch sizes, up to "
               << (graphs_.empty() ? 0 : graphs_.back().batch);
  return Status::ok();
}

Result<TensorView> ModelRunner::execute(const StepPlan& plan) {
  const int32_t num_seqs = static_cast<int32_t>(plan.scheduled.size());
  TS_CHECK(num_seqs > 0 && num_seqs <= max_num_seqs_) << num_seqs << " sequences in a step";
  TS_CHECK(plan.num_tokens > 0 && plan.num_tokens <= max_num_tokens_)
      << plan.num_tokens << " tokens in a step";

  const KvCacheView& cache = pool_->view();
  const size_t block_bytes = cache.layout.block_bytes();
  for (const BlockCopy& c : plan.copies) {
    backend_->copy(cache.block_ptr(c.dst), cache.block_ptr(c.src), block_bytes);
  }

  sampled_.clear();
  int32_t t = 0;
  query_start_[0] = 0;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const ScheduledSequence& item = plan.scheduled[static_cast<size_t>(s)];
    const Sequence& seq = *item.seq;
    const int32_t start = seq.num_computed, end = start + item.num_tokens;
    TS_CHECK(item.num_tokens > 0 && end <= seq.num_tokens() && end <= seq.kv.table.num_tokens())
        << "sequence " << seq.id << " scheduled past its tokens or blocks";
    for (int32_t i = start; i < end; ++i, ++t) {
      token_ids_[static_cast<size_t>(t)] = seq.tokens[static_cast<size_t>(i)];
      positions_[static_cast<size_t>(t)] = i;
      slot_mapping_[static_cast<size_t>(t)] = seq.kv.table.slot(i);
    }
    query_start_[static_cast<size_t>(s) + 1] = t;
    seq_lens_[static_cast<size_t>(s)] = end;
    const std::vector<int32_t>& blocks = seq.kv.table.blocks();
    TS_CHECK_LE(static_cast<int32_t>(blocks.size()), max_blocks_per_seq_);
    std::copy(blocks.begin(), blocks.end(),
              block_tables_.begin() + static_cast<int64_t>(s) * max_blocks_per_seq_);
    if (end == seq.num_tokens()) {
      logit_rows_[sampled_.size()] = t - 1;
      sampled_.push_back(s);
    }
  }
  TS_CHECK_EQ(t, plan.num_tokens);

  logits_ = TensorView();
  // A decode step (one token and one logit row per sequence) replays the graph of the next
  // captured batch size, its extra rows padding.
  const bool decode = t == num_seqs && static_cast<int32_t>(sampled_.size()) == num_seqs;
  const auto graph = std::find_if(graphs_.begin(), graphs_.end(),
                                  [num_seqs](const Graph& g) { return g.batch >= num_seqs; });
  if (decode && graph != graphs_.end()) {
    pad_decode_rows(num_seqs, graph->batch);
    backend_->stage_step(batch_of(graph->batch, graph->batch, graph->batch));
    backend_->replay(graph->id);
    backend_->synchronize();
    logits_ = graph->logits.rows(0, num_seqs);
    logits_on_host_ = false;
    return logits_;
  }
  TS_ASSIGN_OR_RETURN(
      TensorView logits,
      model_->forward(batch_of(t, num_seqs, static_cast<int32_t>(sampled_.size())), cache));
  backend_->synchronize();
  logits_ = logits;
  logits_on_host_ = logits.device == DeviceKind::kCpu;
  return logits;
}

float* ModelRunner::host_row(int32_t r) {
  TS_CHECK(logits_.data != nullptr && r >= 0 && r < logits_.dim(0))
      << "logit row " << r << " of the last step";
  const int64_t vocab = logits_.dim(1);
  if (logits_.device == DeviceKind::kCpu) return logits_.ptr<float>() + r * vocab;
  if (!logits_on_host_) {
    TS_CHECK(host_logits_ != nullptr) << "ModelRunner::init was not called";
    backend_->copy(host_logits_, logits_.data, logits_.nbytes());
    logits_on_host_ = true;
  }
  return host_logits_ + r * vocab;
}

void ModelRunner::apply_penalties(std::span<const PenaltyRow> rows,
                                  std::span<const PenaltyToken> tokens) {
  if (rows.empty()) return;
  TS_CHECK(logits_.data != nullptr) << "penalties before a step with logits";
  backend_->apply_penalties(logits_, rows.data(), static_cast<int32_t>(rows.size()), tokens.data(),
                            static_cast<int32_t>(tokens.size()));
}

void ModelRunner::sample(std::span<const SampleRow> rows, int32_t* out) {
  if (rows.empty()) return;
  TS_CHECK(logits_.data != nullptr) << "sample before a step with logits";
  backend_->sample_rows(logits_, rows.data(), static_cast<int32_t>(rows.size()), out);
}

void ModelRunner::argmax(std::span<const int32_t> rows, int32_t* out) {
  if (rows.empty()) return;
  TS_CHECK(logits_.data != nullptr) << "argmax before a step with logits";
  backend_->argmax_rows(logits_, rows.data(), static_cast<int32_t>(rows.size()), out);
}

}  // namespace tierserve

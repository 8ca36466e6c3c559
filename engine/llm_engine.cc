#include "engine/llm_engine.h"

#include <algorithm>

#include "common/logging.h"
#include "common/units.h"
#include "engine/sampler.h"

namespace tierserve {

Status EngineOptions::validate() const {
  TS_RETURN_IF_ERROR(backend.validate());
  if (block_size <= 0 || block_size > 1024) {
    return invalid_argument("--block-size must be in [1, 1024], got " + std::to_string(block_size));
  }
  if (max_model_len < 0) {
    return invalid_argument("--max-model-len must be positive, got " +
                            std::to_string(max_model_len));
  }
  if (max_num_batched_tokens <= 0) {
    return invalid_argument("--max-num-batched-tokens must be positive, got " +
                            std::to_string(max_num_batched_tokens));
  }
  return Status::ok();
}

LlmEngine::~LlmEngine() {
  // Order matters: everything allocated from the backend goes before it.
  model_.reset();
  kv_pool_.reset();
  weights_.reset();
}

Result<std::unique_ptr<LlmEngine>> LlmEngine::create(const std::filesystem::path& model_dir,
                                                     const EngineOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  std::unique_ptr<LlmEngine> e(new LlmEngine());
  e->options_ = options;
  TS_ASSIGN_OR_RETURN(e->config_, load_model_config(model_dir, &e->generation_defaults_));
  const ModelConfig& c = e->config_;
  if (options.max_model_len > c.max_position_embeddings) {
    return invalid_argument("--max-model-len " + std::to_string(options.max_model_len) +
                            " exceeds the model's context length (max_position_embeddings " +
                            std::to_string(c.max_position_embeddings) + " in " +
                            (model_dir / "config.json").string() + ")");
  }
  for (int32_t eos : c.eos_token_ids) {
    if (eos >= c.vocab_size) {
      return invalid_argument(model_dir.string() + ": EOS token id " + std::to_string(eos) +
                              " is outside the vocabulary [0, " + std::to_string(c.vocab_size) +
                              ") (generation_config.json or config.json)");
    }
  }
  e->max_model_len_ = options.max_model_len > 0 ? options.max_model_len : c.max_position_embeddings;
  e->seed_rng_.seed(options.seed);
  if (e->max_model_len_ <= 0) {
    return invalid_argument(model_dir.string() +
                            "/config.json: no max_position_embeddings; pass --max-model-len");
  }
  TS_ASSIGN_OR_RETURN(e->backend_, create_backend(options.backend));
  TS_ASSIGN_OR_RETURN(e->weights_, load_weights(c, model_dir, options.load_format,
                                                e->backend_.get(), options.seed));

  KvBlockLayout layout;
  layout.num_layers = c.num_layers;
  layout.block_size = options.block_size;
  layout.num_kv_heads = c.num_kv_heads;
  layout.head_dim = c.head_dim;
  layout.dtype = c.dtype;  // KV is stored in the model's dtype, as Hugging Face does
  const int32_t blocks_per_seq = static_cast<int32_t>(
      (static_cast<int64_t>(e->max_model_len_) + options.block_size - 1) / options.block_size);
  TS_ASSIGN_OR_RETURN(e->kv_pool_, KvPool::create(e->backend_.get(), layout, blocks_per_seq));

  const int32_t max_step = std::min(options.max_num_batched_tokens, e->max_model_len_);
  TS_ASSIGN_OR_RETURN(e->model_, Model::create(c, e->backend_.get(), e->weights_.get(), max_step,
                                               /*max_logit_rows=*/1, e->max_model_len_));
  e->positions_.resize(static_cast<size_t>(max_step));
  e->slot_mapping_.resize(static_cast<size_t>(max_step));
  e->block_table_row_.resize(static_cast<size_t>(blocks_per_seq));
  TS_LOG(Info) << c.architecture_name << ": " << c.num_layers << " layers, weights "
               << format_bytes(e->weights_->device_bytes()) << " (" << dtype_name(c.dtype)
               << "), KV cache " << format_bytes(e->kv_pool_->bytes()) << " for "
               << e->max_model_len_ << " tokens, backend " << e->backend_->name();
  return e;
}

Status LlmEngine::check_prompt(const std::vector<int32_t>& prompt, int32_t max_new_tokens) const {
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config_.vocab_size) {
      return invalid_argument("prompt token " + std::to_string(i) + " is " +
                              std::to_string(prompt[i]) + ", outside the vocabulary [0, " +
                              std::to_string(config_.vocab_size) + ")");
    }
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (total > max_model_len_) {
    return invalid_argument("this model's maximum context length is " +
                            std::to_string(max_model_len_) + " tokens, but " +
                            std::to_string(total) + " were requested (" +
                            std::to_string(prompt.size()) + " in the prompt, " +
                            std::to_string(max_new_tokens) + " to generate)");
  }
  return Status::ok();
}

Result<const float*> LlmEngine::step(BlockTable& table, const int32_t* tokens, int32_t n) {
  BlockAllocator& allocator = kv_pool_->allocator();
  for (int32_t need = table.blocks_needed_to_append(n); need > 0; --need) {
    TS_ASSIGN_OR_RETURN(int32_t block, allocator.allocate());
    table.push_block(block);
  }
  const int32_t start = table.num_tokens();
  table.append_tokens(n);
  for (int32_t i = 0; i < n; ++i) {
    positions_[static_cast<size_t>(i)] = start + i;
    slot_mapping_[static_cast<size_t>(i)] = table.slot(start + i);
  }
  std::copy(table.blocks().begin(), table.blocks().end(), block_table_row_.begin());
  const int32_t query_start[2] = {0, n};
  const int32_t seq_len = table.num_tokens();
  const int32_t logit_row = n - 1;

  ForwardBatch batch;
  batch.token_ids = tokens;
  batch.positions = positions_.data();
  batch.attn.num_seqs = 1;
  batch.attn.num_tokens = n;
  batch.attn.query_start = query_start;
  batch.attn.seq_lens = &seq_len;
  batch.attn.block_tables = block_table_row_.data();
  batch.attn.max_blocks_per_seq = static_cast<int32_t>(block_table_row_.size());
  batch.attn.slot_mapping = slot_mapping_.data();
  batch.logit_rows = &logit_row;
  batch.num_logit_rows = 1;
  TS_ASSIGN_OR_RETURN(TensorView logits, model_->forward(batch, kv_pool_->view()));
  backend_->synchronize();
  return static_cast<const float*>(logits.data);
}

Result<const float*> LlmEngine::append(BlockTable& table, const std::vector<int32_t>& tokens,
                                       int32_t chunk_size) {
  const int32_t max_step = static_cast<int32_t>(positions_.size());
  const int32_t chunk = chunk_size > 0 ? std::min(chunk_size, max_step) : max_step;
  const float* logits = nullptr;
  for (size_t begin = 0; begin < tokens.size(); begin += static_cast<size_t>(chunk)) {
    int32_t n = static_cast<int32_t>(std::min(tokens.size() - begin, static_cast<size_t>(chunk)));
    TS_ASSIGN_OR_RETURN(logits, step(table, tokens.data() + begin, n));
  }
  return logits;
}

void LlmEngine::free_sequence(BlockTable& table) {
  for (int32_t block : table.clear()) kv_pool_->allocator().release(block);
}

Result<GenerateResult> LlmEngine::generate(const std::vector<int32_t>& prompt,
                                           const SamplingParams& params,
                                           const TokenCallback& on_token) {
  TS_RETURN_IF_ERROR(params.validate());
  TS_RETURN_IF_ERROR(check_prompt(prompt, params.max_tokens));
  GenerateResult result;
  result.prompt_token_ids = prompt;
  // A request without a seed draws one from the engine's generator (seeded by --seed), so that
  // successive unseeded requests differ while a whole run stays reproducible.
  Sampler sampler(params, config_.vocab_size, params.seed ? *params.seed : seed_rng_());
  std::vector<int32_t> stop_ids = params.stop_token_ids;
  if (!params.ignore_eos) {
    stop_ids.insert(stop_ids.end(), config_.eos_token_ids.begin(), config_.eos_token_ids.end());
  }
  const std::vector<int32_t> none;

  BlockTable table(options_.block_size);
  auto logits_or = append(table, prompt, 0);
  result.finish_reason = "length";
  while (logits_or.is_ok()) {
    const bool too_early = static_cast<int32_t>(result.token_ids.size()) < params.min_tokens;
    SampledToken t = sampler.sample(const_cast<float*>(logits_or.value()), prompt, result.token_ids,
                                    too_early ? stop_ids : none);
    result.token_ids.push_back(t.token);
    result.logprobs.push_back(t.logprob);
    if ((on_token && !on_token(t.token)) ||
        std::find(stop_ids.begin(), stop_ids.end(), t.token) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    if (static_cast<int32_t>(result.token_ids.size()) >= params.max_tokens) break;
    logits_or = step(table, &result.token_ids.back(), 1);
  }
  free_sequence(table);
  if (!logits_or.is_ok()) return logits_or.status();
  return result;
}

Result<std::vector<std::vector<float>>> LlmEngine::score(const std::vector<int32_t>& prompt,
                                                         const std::vector<int32_t>& continuation,
                                                         int32_t chunk_size) {
  TS_RETURN_IF_ERROR(check_prompt(prompt, static_cast<int32_t>(continuation.size())));
  if (!continuation.empty()) {
    TS_RETURN_IF_ERROR(check_prompt(continuation, 0).with_context("continuation"));
  }
  std::vector<std::vector<float>> out;
  BlockTable table(options_.block_size);
  auto logits_or = append(table, prompt, chunk_size);
  for (size_t i = 0; logits_or.is_ok(); ++i) {
    out.emplace_back(logits_or.value(), logits_or.value() + config_.vocab_size);
    if (i == continuation.size()) break;
    logits_or = step(table, &continuation[i], 1);
  }
  free_sequence(table);
  if (!logits_or.is_ok()) return logits_or.status();
  return out;
}

}  // namespace tierserve

// LlmEngine: a model loaded onto a backend with its KV pool, generating for one request at a
// time (the scheduler and continuous batching arrive with the KV-cache issue). Owns the backend,
// weights, KV pool and model; used from one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/sampling_params.h"
#include "kernels/backend_registry.h"
#include "memory/block_table.h"
#include "memory/kv_pool.h"

namespace tierserve {

struct EngineOptions {
  BackendOptions backend;                      // which backend and how many threads
  LoadFormat load_format = LoadFormat::kAuto;  // checkpoint or dummy weights
  int32_t block_size = 16;                     // tokens per KV block
  int32_t max_model_len = 0;                   // context length; 0 = the model's
  int32_t max_num_batched_tokens = 512;        // tokens per forward step (prefill chunk size)
  uint64_t seed = 0;  // seeds the per-request seeds of unseeded requests, and dummy weights

  Status validate() const;
};

struct GenerateResult {
  std::vector<int32_t> prompt_token_ids;  // the prompt as given
  std::vector<int32_t> token_ids;         // generated tokens, including a final EOS/stop token
  std::vector<float> logprobs;            // logprobs[i]: raw log-probability of token_ids[i]
  std::string finish_reason;              // "stop" (EOS or stop token) or "length"
};

class LlmEngine {
 public:
  // Reads the model directory, creates the backend, loads weights and allocates the KV pool for
  // one sequence of max_model_len tokens. Every failure names the file or flag at fault.
  static Result<std::unique_ptr<LlmEngine>> create(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options);
  ~LlmEngine();
  LlmEngine(const LlmEngine&) = delete;
  LlmEngine& operator=(const LlmEngine&) = delete;

  const ModelConfig& config() const { return config_; }
  const GenerationDefaults& generation_defaults() const { return generation_defaults_; }
  int32_t max_model_len() const { return max_model_len_; }
  uint64_t weight_bytes() const { return weights_->device_bytes(); }
  uint64_t kv_cache_bytes() const { return kv_pool_->bytes(); }

  // Generates a continuation of `prompt`. Invalid input (empty prompt, token ids outside the
  // vocabulary, prompt + max_tokens beyond max_model_len, bad sampling params) is kInvalidArgument.
  // `on_token`, if given, is called with each generated token as soon as it is sampled; returning
  // false ends generation there with finish_reason "stop" (a stop string matched, the client
  // went away).
  using TokenCallback = std::function<bool(int32_t token)>;
  Result<GenerateResult> generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                                  const TokenCallback& on_token = nullptr);

  // Teacher forcing, for tests and evaluation: feeds `prompt` (in chunks of `chunk_size` tokens,
  // 0 = max_num_batched_tokens), then each token of `continuation` one at a time, and returns the
  // logits after the prompt and after each continuation token ([continuation.size() + 1][vocab]).
  Result<std::vector<std::vector<float>>> score(const std::vector<int32_t>& prompt,
                                                const std::vector<int32_t>& continuation,
                                                int32_t chunk_size = 0);

 private:
  LlmEngine() = default;
  Status check_prompt(const std::vector<int32_t>& prompt, int32_t max_new_tokens) const;
  // Appends `n` tokens at `tokens` to the sequence in `table` (one forward step) and returns the
  // logits of the last one.
  Result<const float*> step(BlockTable& table, const int32_t* tokens, int32_t n);
  // Appends a whole token list in chunks; returns the logits of its last token.
  Result<const float*> append(BlockTable& table, const std::vector<int32_t>& tokens,
                              int32_t chunk_size);
  void free_sequence(BlockTable& table);

  EngineOptions options_;
  ModelConfig config_;
  GenerationDefaults generation_defaults_;
  int32_t max_model_len_ = 0;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<WeightProvider> weights_;
  std::unique_ptr<KvPool> kv_pool_;
  std::unique_ptr<Model> model_;
  std::mt19937_64 seed_rng_;  // seeds of requests that give none
  // Step inputs, sized at creation.
  std::vector<int32_t> positions_;
  std::vector<int32_t> slot_mapping_;
  std::vector<int32_t> block_table_row_;
};

}  // namespace tierserve

// LlmEngine: a model loaded onto a backend with a paged KV cache, serving many requests at once
// by continuous batching (DESIGN.md §3, §4).
//
// Threads: add_request() and abort() may be called from any thread; they only queue work. Every
// other method runs on the engine thread — the thread that calls step(), or the one start()
// launches — which alone owns the scheduler, the KV metadata and the model. Outputs reach other
// threads through each request's RequestStream.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/topology.h"
#include "engine/model.h"
#include "engine/model_config.h"
#include "engine/model_runner.h"
#include "engine/model_weights.h"
#include "engine/request_stream.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "kernels/backend_registry.h"
#include "memory/kv_cache_manager.h"
#include "memory/kv_pool.h"
#include "memory/kv_sizing.h"
#include "offload/weight_streamer.h"

namespace tierserve {

struct EngineOptions {
  BackendOptions backend;      // which backend, threads, --deterministic
  bool enforce_eager = false;  // --enforce-eager: no graphs of decode steps on a GPU
  LoadFormat load_format = LoadFormat::kAuto;  // checkpoint or dummy weights
  int32_t block_size = 16;                     // tokens per KV block
  int32_t max_model_len = 0;                   // context length; 0 = the model's
  int32_t max_num_batched_tokens = 512;        // tokens per forward step (prefill chunk size)
  int32_t max_num_seqs = 256;                  // sequences per step
  bool enable_prefix_caching = true;           // reuse KV of shared prompt prefixes
  double gpu_memory_utilization = 0.9;         // fraction of device memory for weights + KV
  double device_memory_gb = 0;         // CPU backend: the RAM budget; 0 = physical RAM, with the KV
                                       // cache capped at 4 GiB
  uint64_t kv_cache_memory_bytes = 0;  // if > 0, the KV cache size (overrides the above)
  uint64_t seed = 0;  // seeds the per-request seeds of unseeded requests, and dummy weights
  // Ids the tokenizer defines; a model with more rows (a padded vocabulary, e.g. ChatGLM's
  // padded_vocab_size) gets the logits of the others masked to -inf. 0 = every row is a token.
  int32_t tokenizer_vocab_size = 0;
  // Weight tiers (DESIGN.md §2, offload/planner.h): GiB of weights forced to the host and disk
  // tiers; absent = auto (a model that does not fit the device tier spills, with a warning).
  std::optional<double> cpu_offload_gb;   // --cpu-offload-gb
  std::optional<double> disk_offload_gb;  // --disk-offload-gb
  int32_t offload_prefetch_depth = 2;     // --offload-prefetch-depth: streamed layers in flight
  // KV tiers below the device (DESIGN.md §2). With either, preemption swaps a sequence's blocks
  // out instead of dropping them.
  double kv_offloading_size_gb = 0;   // --kv-offloading-size: host GiB for swapped KV blocks
  double kv_disk_offload_gb = 0;      // --kv-disk-offload-gb: disk GiB behind the host tier
  std::filesystem::path offload_dir;  // --offload-dir: where the disk tier's files go
  int32_t offload_queue_depth = 64;   // io_uring queue depth of the disk tier
  DiskFaultHook kv_disk_fault_hook_for_testing;      // tests only: faults on the KV disk tier
  DiskFaultHook weight_disk_fault_hook_for_testing;  // tests only: on disk-streamed weights
  LoadProgressFn on_load_progress;  // may be empty: weight loading's progress, during create()

  Status validate() const;
};

struct GenerateResult {
  std::vector<int32_t> prompt_token_ids;  // the prompt as given
  std::vector<int32_t> token_ids;         // generated tokens, including a final EOS/stop token
  std::vector<float> logprobs;            // logprobs[i]: raw log-probability of token_ids[i];
                                          // empty unless params.logprobs
  std::string finish_reason;              // "stop" (EOS, stop token, callback) or "length"
  int32_t num_cached_tokens = 0;          // prompt tokens served from the prefix cache
};

// Counters since creation, for benchmarks and metrics. Engine thread.
struct EngineStats {
  int64_t steps = 0;             // forward steps run
  int64_t scheduled_seqs = 0;    // sum over steps of sequences in the step
  int64_t decode_seqs = 0;       // sum over steps of sequences that decoded one token
  int64_t scheduled_tokens = 0;  // sum over steps of tokens in the step
  int64_t generated_tokens = 0;  // tokens sampled
  int64_t preemptions = 0;       // sequences preempted
  int64_t swap_failures = 0;     // swaps that failed, so that the sequence was recomputed
};

// The engine's state after its last step, for metrics; any thread (LlmEngine::load()).
struct EngineLoad {
  int32_t running = 0, waiting = 0, swapped = 0;  // sequences per queue
  int32_t kv_blocks_used = 0, kv_blocks = 0;      // device-tier KV blocks in use / in all
  int32_t host_blocks_used = 0, host_blocks = 0;  // KV host tier (swapped and prefix blocks)
  int32_t disk_blocks_used = 0, disk_blocks = 0;  // KV disk tier
  int64_t preemptions = 0;                        // since start
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;  // since start
  // Bytes moved between tiers since start: KV swaps and prefix spills, and streamed weights
  // (host -> device copies; disk -> device reads into the staging ring).
  uint64_t bytes_host_to_device = 0, bytes_device_to_host = 0;
  uint64_t bytes_host_to_disk = 0, bytes_disk_to_host = 0, bytes_disk_to_device = 0;
  double weight_stall_seconds = 0;  // forward steps waiting on streamed weights, since start
};

// The KV tiers below the device, for metrics and leak checks. Engine thread.
struct KvTierUsage {
  int32_t host_blocks = 0, host_used = 0;  // host-tier slots, and those holding swapped blocks
  int32_t disk_blocks = 0, disk_used = 0;  // disk-tier extents, and those holding swapped blocks
  int32_t prefix_blocks = 0;               // evicted prefix blocks stored in either tier
  KvSwapStats swaps;                       // blocks moved so far
};

class LlmEngine {
 public:
  // Reads the model directory, creates the backend, loads weights, sizes and allocates the KV
  // cache. Every failure names the file or flag at fault.
  static Result<std::unique_ptr<LlmEngine>> create(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options);
  ~LlmEngine();  // stops the loop thread if running
  LlmEngine(const LlmEngine&) = delete;
  LlmEngine& operator=(const LlmEngine&) = delete;

  // Immutable after creation; any thread.
  const ModelConfig& config() const { return config_; }
  const GenerationDefaults& generation_defaults() const { return generation_defaults_; }
  int32_t max_model_len() const { return max_model_len_; }
  uint64_t weight_bytes() const { return weights_->device_bytes(); }
  const KvSizing& kv_sizing() const { return kv_sizing_; }
  // The backend the model runs on (benchmarks measure its bounds). Engine thread, or no loop.
  Backend& backend() { return *backend_; }
  // Engine thread (or no loop running).
  KvTierUsage kv_tier_usage();
  // Any thread: the state published after the last step.
  EngineLoad load() const;
  // "weights ..., KV cache ..." as printed at start-up.
  const std::string& startup_summary() const { return startup_summary_; }

  // Any thread. Validates `prompt` and `params` (empty prompt, ids outside the vocabulary,
  // bad sampling values, a request that can never fit: kInvalidArgument) and queues the
  // request. Its n outputs arrive on the returned stream. `on_ready` is passed to the stream.
  Result<std::shared_ptr<RequestStream>> add_request(std::vector<int32_t> prompt,
                                                     const SamplingParams& params,
                                                     std::function<void()> on_ready = nullptr);
  // Any thread. Ends a request: each unfinished output gets a final update with finish_reason
  // "abort" and its KV blocks are freed. Unknown or finished ids are ignored.
  void abort(int64_t request_id);

  // Engine thread. Takes queued requests and aborts, runs one forward step over the scheduled
  // sequences, samples, and publishes outputs. Returns false when there was nothing to do.
  bool step();
  // Engine thread. Whether any request is unfinished (queued ones included).
  bool has_unfinished();
  // Runs step() on a thread of its own until stop() (or destruction), sleeping when idle.
  void start();
  void stop();

  // Engine thread, no loop thread running: one request run to completion on the calling thread.
  // `on_token`, if given, sees each generated token as it is sampled; returning false ends
  // generation there with finish_reason "stop" (a stop string matched, the client went away).
  using TokenCallback = std::function<bool(int32_t token)>;
  Result<GenerateResult> generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                                  const TokenCallback& on_token = nullptr);

  // Engine thread, no loop thread and no other request: teacher forcing for tests and
  // evaluation. Feeds `prompt` in chunks of `chunk_size` tokens (0 = max_num_batched_tokens),
  // then each token of `continuation` one at a time; returns the logits after the prompt and
  // after each continuation token ([continuation.size() + 1][vocab]).
  Result<std::vector<std::vector<float>>> score(const std::vector<int32_t>& prompt,
                                                const std::vector<int32_t>& continuation,
                                                int32_t chunk_size = 0);

  // Engine thread.
  const EngineStats& stats() const { return stats_; }
  const KvCacheManager& kv_cache() const { return *kv_; }
  int32_t num_running() const { return scheduler_->num_running(); }
  int32_t num_waiting() const { return scheduler_->num_waiting(); }

 private:
  struct Request;
  LlmEngine() = default;
  Status check_prompt(const std::vector<int32_t>& prompt) const;
  void take_inbox();
  // Ends `seq` with `reason`, publishing `out` (the sequence's last new tokens, if any) as its
  // final update.
  void finish_sequence(Request& req, Sequence* seq, const char* reason, Status error = {},
                       RequestOutput out = {});
  void abort_now(int64_t request_id);
  // Samples the next token of `seq` (and, on its first token, of the request's forks) from
  // `logits` and publishes it.
  void sample(Request& req, Sequence* seq, float* logits);
  // Samples one token of `seq` from `logits` (modified), publishes it, and finishes `seq` at a
  // stop token or max_tokens.
  void emit_token(Request& req, Sequence* seq, float* logits);
  // Appends the chosen token `t` to `seq`, streams it, and finishes the sequence on a stop.
  void emit(Request& req, Sequence* seq, const SampledToken& t);
  // Where `seq`'s next token is decided: sequences without logprobs, penalties, suppressed
  // tokens or forks by the backend, where the logits are (the arg-max when greedy, else
  // Backend::sample_rows); the others by the host sampler.
  enum class RowPath { kArgmax, kSample, kHost };
  RowPath row_path(const Request& req, const Sequence& seq) const;
  // Adds `seq`'s penalties and suppressed tokens, if any, for logits row `row` (penalty_rows_,
  // penalty_tokens_).
  void add_penalties(int32_t row, const Request& req, const Sequence& seq);
  void fail_step(const StepPlan& plan, const Status& error);
  // Creates the KV host and disk tiers from the options (nothing when neither is asked for).
  Status create_kv_tiers();
  // Carries out the plan's spills, swaps and prefix restores; a sequence whose swap or restore
  // fails is recomputed instead.
  void apply_swaps(StepPlan& plan);
  std::unique_ptr<Sequence> new_sequence(Request& req, int32_t index);
  // Records the queue time of requests scheduled for the first time in `plan`.
  void note_first_scheduled(const StepPlan& plan);
  // Puts the request's queue time into `out` if it is known and was not sent yet.
  static void report_queue_time(Request& req, RequestOutput& out);

  EngineOptions options_;
  ModelConfig config_;
  GenerationDefaults generation_defaults_;
  int32_t max_model_len_ = 0;
  KvSizing kv_sizing_;
  std::string startup_summary_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Topology> topology_;  // NUMA placement of the host tiers
  std::string placement_report_;        // where the weights went (offload/planner.h)
  std::unique_ptr<WeightProvider> weights_;
  const WeightStreamer* streamer_ = nullptr;  // weights_ when some units are streamed, else null
  std::unique_ptr<KvPool> kv_pool_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCacheManager> kv_;
  // The KV host and disk tiers (null without them); destroyed before the device tier.
  std::unique_ptr<HostPool> kv_host_;
  std::unique_ptr<TransferEngine> kv_transfers_;
  std::unique_ptr<KvSwapper> swapper_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<Sampler> sampler_;
  std::vector<float> fork_logits_;        // [vocab] raw logits kept for a request's forks
  bool weights_resident_ = true;          // no weight unit is streamed from a lower tier
  uint64_t backend_reserved_ = 0;         // Backend::reserved_bytes, counted in the device budget
  std::vector<int32_t> argmax_rows_;      // [max_num_seqs] this step's kArgmax logit rows
  std::vector<int32_t> argmax_tokens_;    // [max_num_seqs] their tokens
  std::vector<SampleRow> sample_rows_;    // [max_num_seqs] this step's kSample rows
  std::vector<int32_t> sample_tokens_;    // [max_num_seqs] their tokens
  std::vector<int32_t> row_tokens_;       // [max_num_seqs] per logit row: its token, -1 for kHost
  std::vector<PenaltyRow> penalty_rows_;  // this step's rows with penalties
  std::vector<PenaltyToken> penalty_tokens_;  // their distinct tokens
  std::vector<int32_t> token_entry_;          // [vocab] index in penalty_tokens_ while adding, -1

  // Engine thread.
  std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;
  int64_t next_sequence_id_ = 0;
  EngineStats stats_;
  mutable std::mutex load_mutex_;
  EngineLoad load_;  // published by publish_load() after each step
  void publish_load();

  // Shared with other threads, under inbox_mutex_.
  std::mutex inbox_mutex_;
  std::condition_variable inbox_ready_;
  std::vector<std::unique_ptr<Request>> new_requests_;
  std::vector<int64_t> aborts_;
  int64_t next_request_id_ = 1;
  std::mt19937_64 seed_rng_;  // seeds of requests that give none
  bool stopping_ = false;
  std::thread loop_;
};

}  // namespace tierserve

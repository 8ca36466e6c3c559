#include "engine/llm_engine.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <random>

#include "common/check.h"
#include "common/file.h"
#include "common/logging.h"
#include "common/topology.h"
#include "common/units.h"
#include "engine/weight_loading.h"

namespace tierserve {

struct LlmEngine::Request {
  int64_t id = 0;
  SamplingParams params;
  uint64_t seed = 0;                              // the generator seed of output 0
  std::shared_ptr<RequestStream> stream;          // where outputs go
  std::vector<std::unique_ptr<Sequence>> seqs;    // seqs[i] makes output i (forks arrive later)
  std::vector<int32_t> stop_ids;                  // stop_token_ids, plus EOS unless ignore_eos
  int32_t unfinished = 0;                         // outputs not finished
  bool forked = false;                            // outputs 1..n-1 exist
  std::chrono::steady_clock::time_point arrival;  // when add_request() queued it
  double queue_seconds = -1;                      // arrival until first scheduled; -1 while waiting
  bool queue_reported = false;                    // queue_seconds went out with an output
};

namespace {

// The CPU backend's KV cache when neither --device-memory-gb nor --kv-cache-memory-bytes is
// given.
constexpr uint64_t kDefaultCpuKvBytes = 4 * kGiB;

// What identifies the KV a model computes for given tokens: the configuration and the weights'
// files (or the dummy-weight seed). Hashed into every prefix-cache block.
std::string model_salt(const std::filesystem::path& dir, const ModelConfig& c, LoadFormat format,
                       uint64_t seed) {
  std::string salt =
      "tierserve kv v1|" + c.architecture_name + "|" + std::string(dtype_name(c.dtype));
  auto config = read_file_if_exists(dir / "config.json");
  if (config.is_ok() && config.value()) salt += "|" + *config.value();
  if (format == LoadFormat::kDummy) return salt + "|dummy " + std::to_string(seed);
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".safetensors") continue;
    auto size = std::filesystem::file_size(e.path(), ec);
    auto mtime = std::filesystem::last_write_time(e.path(), ec).time_since_epoch().count();
    files.push_back(e.path().filename().string() + ":" + std::to_string(size) + ":" +
                    std::to_string(mtime));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) salt += "|" + f;
  return salt;
}

}  // namespace

Status EngineOptions::validate() const {
  TS_RETURN_IF_ERROR(backend.validate());
  if (block_size <= 0 || block_size > 1024) {
    return invalid_argument("--block-size must be in [1, 1024], got " + std::to_string(block_size));
  }
  if (tokenizer_vocab_size < 0) {
    return invalid_argument("tokenizer_vocab_size must be >= 0, got " +
                            std::to_string(tokenizer_vocab_size));
  }
  if (max_model_len < 0) {
    return invalid_argument("--max-model-len must be positive, got " +
                            std::to_string(max_model_len));
  }
  if (max_num_batched_tokens <= 0) {
    return invalid_argument("--max-num-batched-tokens must be positive, got " +
                            std::to_string(max_num_batched_tokens));
  }
  if (max_num_seqs <= 0 || max_num_seqs > 65536) {
    return invalid_argument("--max-num-seqs must be in [1, 65536], got " +
                            std::to_string(max_num_seqs));
  }
  if (!(gpu_memory_utilization > 0 && gpu_memory_utilization <= 1)) {
    return invalid_argument("--gpu-memory-utilization must be in (0, 1], got " +
                            std::to_string(gpu_memory_utilization));
  }
  if (!(device_memory_gb >= 0 && device_memory_gb < 1e9)) {
    return invalid_argument("--device-memory-gb must be positive, got " +
                            std::to_string(device_memory_gb));
  }
  if (!(kv_offloading_size_gb >= 0 && kv_offloading_size_gb < 1e6)) {
    return invalid_argument("--kv-offloading-size must be a size in GiB >= 0, got " +
                            std::to_string(kv_offloading_size_gb));
  }
  if (!(kv_disk_offload_gb >= 0 && kv_disk_offload_gb < 1e6)) {
    return invalid_argument("--kv-disk-offload-gb must be a size in GiB >= 0, got " +
                            std::to_string(kv_disk_offload_gb));
  }
  if (kv_disk_offload_gb > 0 && offload_dir.empty()) {
    return invalid_argument(
        "--kv-disk-offload-gb needs --offload-dir (where the disk tier's "
        "files go)");
  }
  if (cpu_offload_gb && !(*cpu_offload_gb >= 0 && *cpu_offload_gb < 1e6)) {
    return invalid_argument("--cpu-offload-gb must be auto or a size in GiB >= 0, got " +
                            std::to_string(*cpu_offload_gb));
  }
  if (disk_offload_gb && !(*disk_offload_gb >= 0 && *disk_offload_gb < 1e6)) {
    return invalid_argument("--disk-offload-gb must be auto or a size in GiB >= 0, got " +
                            std::to_string(*disk_offload_gb));
  }
  if (offload_prefetch_depth < 1 || offload_prefetch_depth > 64) {
    return invalid_argument("--offload-prefetch-depth must be in [1, 64], got " +
                            std::to_string(offload_prefetch_depth));
  }
  if (offload_queue_depth < 1 || offload_queue_depth > 4096) {
    return invalid_argument("--offload-queue-depth must be in [1, 4096], got " +
                            std::to_string(offload_queue_depth));
  }
  if (disk_offload_gb && *disk_offload_gb > 0 && offload_dir.empty()) {
    return invalid_argument(
        "--disk-offload-gb needs --offload-dir (where disk-streamed weights are read from)");
  }
  if (!offload_dir.empty()) {
    // Checked before anything loads, so that a bad directory is the first and only error.
    const std::string dir = offload_dir.string();
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      return not_found("--offload-dir " + dir + ": " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
      return invalid_argument("--offload-dir " + dir + " is not a directory");
    if (::access(dir.c_str(), W_OK | X_OK) != 0) {
      return invalid_argument("--offload-dir " + dir + " is not writable: " + std::strerror(errno));
    }
  }
  return Status::ok();
}

LlmEngine::~LlmEngine() {
  stop();
  // Order matters: everything allocated from the backend goes before it.
  swapper_.reset();
  kv_transfers_.reset();
  kv_host_.reset();
  runner_.reset();
  model_.reset();
  kv_pool_.reset();
  weights_.reset();
  topology_.reset();
}

Result<std::unique_ptr<LlmEngine>> LlmEngine::create(const std::filesystem::path& model_dir,
                                                     const EngineOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  std::unique_ptr<LlmEngine> e(new LlmEngine());
  e->options_ = options;
  TS_ASSIGN_OR_RETURN(e->config_, load_model_config(model_dir, &e->generation_defaults_));
  if (options.tokenizer_vocab_size < e->config_.vocab_size) {
    e->config_.tokenizer_vocab_size = options.tokenizer_vocab_size;
  }
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
  {
    WeightTierOptions tiers;
    tiers.cpu_offload_gb = options.cpu_offload_gb;
    tiers.disk_offload_gb = options.disk_offload_gb;
    tiers.offload_dir = options.offload_dir;
    tiers.prefetch_depth = options.offload_prefetch_depth;
    tiers.queue_depth = options.offload_queue_depth;
    const uint64_t device_memory = options.device_memory_gb > 0
                                       ? static_cast<uint64_t>(options.device_memory_gb * kGiB)
                                       : e->backend_->memory_capacity();
    tiers.device_budget =
        static_cast<uint64_t>(static_cast<double>(device_memory) * options.gpu_memory_utilization);
    // The KV cache must hold one request of max_model_len next to the resident weights.
    const uint64_t block_bytes = static_cast<uint64_t>(c.num_layers) * 2 * options.block_size *
                                 c.num_kv_heads * c.head_dim * dtype_size(c.dtype);
    tiers.min_kv_bytes = (static_cast<uint64_t>(e->max_model_len_) + options.block_size - 1) /
                         options.block_size * block_bytes;
    // The model's activation buffers live in the device tier next to the weights.
    tiers.device_reserved = Model::buffer_bytes_for(
        c, std::min(options.max_num_batched_tokens, e->max_model_len_), options.max_num_seqs);
    // And the backend's own scratch and step buffers (GPU sampling buffers, say).
    const int32_t blocks_per_seq = static_cast<int32_t>(
        (static_cast<int64_t>(e->max_model_len_) + options.block_size - 1) / options.block_size);
    e->backend_reserved_ = e->backend_->reserved_bytes(
        ModelRunner::step_limits(c, std::min(options.max_num_batched_tokens, e->max_model_len_),
                                 options.max_num_seqs, blocks_per_seq, options.block_size));
    tiers.device_reserved += e->backend_reserved_;
    e->topology_ = std::make_unique<Topology>();
    tiers.topology = e->topology_.get();
    tiers.on_progress = options.on_load_progress;
    tiers.fault_hook_for_testing = options.weight_disk_fault_hook_for_testing;
    // The KV tiers below the device share the host memory and --offload-dir with the weights.
    tiers.host_reserved = static_cast<uint64_t>(options.kv_offloading_size_gb * kGiB);
    tiers.disk_reserved = static_cast<uint64_t>(options.kv_disk_offload_gb * kGiB);
    TS_ASSIGN_OR_RETURN(LoadedWeights loaded,
                        load_tiered_weights(c, model_dir, options.load_format, e->backend_.get(),
                                            tiers, options.seed));
    e->weights_ = std::move(loaded.provider);
    e->streamer_ = dynamic_cast<const WeightStreamer*>(e->weights_.get());
    e->weights_resident_ = loaded.placement.num_streamed() == 0;
    if (!e->weights_resident_) e->placement_report_ = loaded.placement.report();
  }

  const int32_t max_step = std::min(options.max_num_batched_tokens, e->max_model_len_);
  const int32_t max_seqs = options.max_num_seqs;
  TS_ASSIGN_OR_RETURN(e->model_, Model::create(c, e->backend_.get(), e->weights_.get(), max_step,
                                               max_seqs, e->max_model_len_));

  KvBlockLayout layout;
  layout.num_layers = c.num_layers;
  layout.block_size = options.block_size;
  layout.num_kv_heads = c.num_kv_heads;
  layout.head_dim = c.head_dim;
  layout.dtype = c.dtype;  // KV is stored in the model's dtype, as Hugging Face does
  KvSizingInputs sizing;
  sizing.device_memory_bytes = options.device_memory_gb > 0
                                   ? static_cast<uint64_t>(options.device_memory_gb * kGiB)
                                   : e->backend_->memory_capacity();
  sizing.memory_utilization = options.gpu_memory_utilization;
  sizing.used_bytes =
      e->weights_->device_bytes() + e->model_->buffer_bytes() + e->backend_reserved_;
  sizing.kv_cache_memory_bytes = options.kv_cache_memory_bytes;
  if (e->backend_->device() == DeviceKind::kCpu && options.device_memory_gb <= 0 &&
      options.kv_cache_memory_bytes == 0) {
    // All of RAM is not the CPU's to give: without a budget, the KV cache gets at most
    // kDefaultCpuKvBytes, as vLLM's CPU backend defaults to a 4 GiB KV cache.
    const uint64_t budget = static_cast<uint64_t>(static_cast<double>(sizing.device_memory_bytes) *
                                                  options.gpu_memory_utilization);
    if (budget > sizing.used_bytes) {
      sizing.kv_cache_memory_bytes = std::min(budget - sizing.used_bytes, kDefaultCpuKvBytes);
    }
  }
  sizing.block_bytes = layout.block_bytes();
  sizing.block_size = options.block_size;
  sizing.max_model_len = e->max_model_len_;
  TS_ASSIGN_OR_RETURN(e->kv_sizing_, size_kv_cache(sizing));
  TS_ASSIGN_OR_RETURN(e->kv_pool_,
                      KvPool::create(e->backend_.get(), layout, e->kv_sizing_.num_blocks));

  KvCacheOptions kv;
  kv.num_blocks = e->kv_sizing_.num_blocks;
  kv.block_size = options.block_size;
  kv.enable_prefix_caching = options.enable_prefix_caching;
  kv.salt = model_salt(model_dir, c, options.load_format, options.seed);
  kv.watermark_blocks = e->kv_sizing_.watermark_blocks;
  // With lower KV tiers, blocks evicted from the prefix cache are spilled to them.
  kv.record_evictions = options.enable_prefix_caching &&
                        (options.kv_offloading_size_gb > 0 || options.kv_disk_offload_gb > 0);
  e->kv_ = std::make_unique<KvCacheManager>(kv);
  SchedulerOptions sched;
  sched.max_num_seqs = max_seqs;
  sched.max_num_batched_tokens = max_step;
  sched.max_model_len = e->max_model_len_;
  TS_RETURN_IF_ERROR(e->create_kv_tiers());
  e->scheduler_ = std::make_unique<Scheduler>(sched, e->kv_.get(), e->swapper_.get());
  const int32_t max_blocks_per_seq = static_cast<int32_t>(
      (static_cast<int64_t>(e->max_model_len_) + options.block_size - 1) / options.block_size);
  e->runner_ = std::make_unique<ModelRunner>(e->model_.get(), e->backend_.get(), e->kv_pool_.get(),
                                             max_step, max_seqs, max_blocks_per_seq);
  // Graphs of decode steps need every weight resident: a streamed layer waits on the host.
  TS_RETURN_IF_ERROR(e->runner_->init(!options.enforce_eager && e->weights_resident_));
  e->sampler_ = std::make_unique<Sampler>(c.vocab_size);
  e->fork_logits_.resize(static_cast<size_t>(c.vocab_size));
  for (std::vector<int32_t>* v :
       {&e->argmax_rows_, &e->argmax_tokens_, &e->sample_tokens_, &e->row_tokens_}) {
    v->reserve(static_cast<size_t>(max_seqs));
  }
  e->sample_rows_.reserve(static_cast<size_t>(max_seqs));
  e->penalty_rows_.reserve(static_cast<size_t>(max_seqs));
  // As ModelRunner bounds a step's penalty tokens: a row's sequence and stop ids, or the
  // vocabulary.
  const size_t penalty_row = std::min<size_t>(
      static_cast<size_t>(c.vocab_size),
      static_cast<size_t>(max_blocks_per_seq) * static_cast<size_t>(options.block_size) +
          kMaxPenaltyStopIds);
  e->penalty_tokens_.reserve(static_cast<size_t>(max_seqs) * penalty_row);
  e->token_entry_.assign(static_cast<size_t>(c.vocab_size), -1);

  e->startup_summary_ = c.architecture_name + ": " + std::to_string(c.num_layers) +
                        " layers, weights " + format_bytes(e->weights_->device_bytes()) + " (" +
                        std::string(dtype_name(c.dtype)) + "), " +
                        e->kv_sizing_.describe(options.block_size, e->max_model_len_) +
                        "; backend " + std::string(e->backend_->name());
  if (!e->placement_report_.empty()) e->startup_summary_ += "; " + e->placement_report_;
  if (e->swapper_ != nullptr) {
    const KvTierUsage u = e->kv_tier_usage();
    const int64_t bs = options.block_size;
    e->startup_summary_ += "; KV swap space: host " + std::to_string(u.host_blocks * bs) +
                           " tokens (" + std::to_string(u.host_blocks) + " blocks), disk " +
                           std::to_string(u.disk_blocks * bs) + " tokens (" +
                           std::to_string(u.disk_blocks) + " blocks)";
  }
  TS_LOG(Info) << e->startup_summary_;
  e->publish_load();
  return e;
}

Status LlmEngine::create_kv_tiers() {
  const EngineOptions& o = options_;
  if (o.kv_offloading_size_gb <= 0 && o.kv_disk_offload_gb <= 0) return Status::ok();
  const KvCacheView& view = kv_pool_->view();
  const uint64_t block_bytes = view.layout.block_bytes();
  const uint64_t extent_bytes = (block_bytes + 4095) / 4096 * 4096;
  const uint64_t host_blocks = static_cast<uint64_t>(o.kv_offloading_size_gb * kGiB) / block_bytes;
  std::unique_ptr<DiskStore> disk;
  int32_t num_staging = 0;
  if (o.kv_disk_offload_gb > 0) {
    DiskStoreOptions d;
    d.dir = o.offload_dir;
    d.extent_bytes = extent_bytes;
    d.capacity_bytes =
        static_cast<uint64_t>(o.kv_disk_offload_gb * kGiB) / extent_bytes * extent_bytes;
    if (d.capacity_bytes == 0) d.capacity_bytes = extent_bytes;
    d.queue_depth = o.offload_queue_depth;
    Result<std::unique_ptr<DiskStore>> store = DiskStore::create(d);
    if (!store.is_ok()) return store.status().with_context("--offload-dir (KV disk tier)");
    disk = std::move(store.value());
    if (o.kv_disk_fault_hook_for_testing) {
      disk->set_fault_hook_for_testing(o.kv_disk_fault_hook_for_testing);
    }
    // A step's disk moves go in batches of this many blocks, all in flight at once.
    num_staging = std::clamp(o.offload_queue_depth / 2, 8, 32);
  }
  const uint64_t host_bytes =
      host_blocks * block_bytes + static_cast<uint64_t>(num_staging) * extent_bytes + 2 * 4096;
  TS_ASSIGN_OR_RETURN(kv_host_, HostPool::create(host_bytes, backend_.get(), topology_.get()));
  if (disk != nullptr && kv_host_->bytes() > 0) {
    // Disk transfers go through host staging buffers in this pool: registered, io_uring uses
    // them without pinning pages per operation. Registration is an optimisation only.
    std::vector<iovec> iov;
    constexpr uint64_t kMaxRegistered = 1ull << 30;  // io_uring's limit per buffer
    for (uint64_t off = 0; off < kv_host_->bytes(); off += kMaxRegistered) {
      iov.push_back({kv_host_->data() + off, std::min(kMaxRegistered, kv_host_->bytes() - off)});
    }
    if (Status s = disk->register_buffers(iov); !s.is_ok()) {
      TS_LOG(Warning) << "KV disk tier: host buffers not registered with io_uring (" << s.message()
                      << "); it works without, with more overhead per I/O";
    }
  }
  TS_ASSIGN_OR_RETURN(kv_transfers_, TransferEngine::create(backend_.get(), std::move(disk)));
  KvSwapperOptions so;
  so.num_host_blocks = static_cast<int32_t>(std::min<uint64_t>(host_blocks, INT32_MAX));
  so.num_staging = std::max(num_staging, 1);
  TS_ASSIGN_OR_RETURN(swapper_, KvSwapper::create(view, kv_host_.get(), kv_transfers_.get(), so));
  return Status::ok();
}

EngineLoad LlmEngine::load() const {
  std::lock_guard<std::mutex> lock(load_mutex_);
  return load_;
}

void LlmEngine::publish_load() {
  EngineLoad l;
  l.running = scheduler_->num_running();
  l.waiting = scheduler_->num_waiting();
  l.swapped = scheduler_->num_swapped();
  l.kv_blocks = kv_->num_blocks();
  l.kv_blocks_used = kv_->num_used_blocks();
  l.preemptions = stats_.preemptions;
  l.prefix_query_tokens = kv_->prefix_query_tokens();
  l.prefix_hit_tokens = kv_->prefix_hit_tokens();
  if (swapper_ != nullptr) {
    l.host_blocks = swapper_->num_host_blocks();
    l.host_blocks_used = swapper_->num_used_host_blocks();
    l.disk_blocks = static_cast<int32_t>(kv_transfers_->num_extents());
    l.disk_blocks_used = swapper_->num_used_disk_blocks();
    const KvSwapStats& k = swapper_->stats();
    l.bytes_host_to_device += k.bytes_host_to_device;
    l.bytes_device_to_host += k.bytes_device_to_host;
    l.bytes_host_to_disk += k.bytes_host_to_disk;
    l.bytes_disk_to_host += k.bytes_disk_to_host;
  }
  if (streamer_ != nullptr) {
    const StreamStats& w = streamer_->stats();
    l.bytes_host_to_device += w.host_bytes;
    l.bytes_disk_to_device += w.disk_bytes;
    l.weight_stall_seconds = w.stall_seconds;
  }
  std::lock_guard<std::mutex> lock(load_mutex_);
  load_ = l;
}

KvTierUsage LlmEngine::kv_tier_usage() {
  KvTierUsage u;
  if (swapper_ == nullptr) return u;
  swapper_->drain();
  u.host_blocks = swapper_->num_host_blocks();
  u.host_used = swapper_->num_used_host_blocks();
  u.disk_blocks = static_cast<int32_t>(kv_transfers_->num_extents());
  u.disk_used = swapper_->num_used_disk_blocks();
  u.prefix_blocks = swapper_->num_prefix_blocks();
  u.swaps = swapper_->stats();
  return u;
}

Status LlmEngine::check_prompt(const std::vector<int32_t>& prompt) const {
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config_.vocab_size) {
      return invalid_argument("prompt token " + std::to_string(i) + " is " +
                              std::to_string(prompt[i]) + ", outside the vocabulary [0, " +
                              std::to_string(config_.vocab_size) + ")");
    }
  }
  return Status::ok();
}

Result<std::shared_ptr<RequestStream>> LlmEngine::add_request(std::vector<int32_t> prompt,
                                                              const SamplingParams& params,
                                                              std::function<void()> on_ready) {
  TS_RETURN_IF_ERROR(params.validate());
  TS_RETURN_IF_ERROR(check_prompt(prompt));
  TS_RETURN_IF_ERROR(
      scheduler_->check_fits(static_cast<int32_t>(prompt.size()), params.max_tokens));
  auto req = std::make_unique<Request>();
  req->arrival = std::chrono::steady_clock::now();
  req->params = params;
  req->stop_ids = params.stop_token_ids;
  if (!params.ignore_eos) {
    req->stop_ids.insert(req->stop_ids.end(), config_.eos_token_ids.begin(),
                         config_.eos_token_ids.end());
  }
  req->unfinished = params.n;
  auto seq = std::make_unique<Sequence>(0, options_.block_size);
  seq->prompt_len = static_cast<int32_t>(prompt.size());
  seq->tokens = std::move(prompt);
  seq->max_tokens = params.max_tokens;
  req->seqs.push_back(std::move(seq));
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    req->id = next_request_id_++;
    // A request without a seed draws one from the engine's generator (seeded by --seed), so
    // that successive unseeded requests differ while a whole run stays reproducible.
    req->seed = params.seed ? *params.seed : seed_rng_();
    stream = std::make_shared<RequestStream>(req->id, params.n, std::move(on_ready));
    req->stream = stream;
    new_requests_.push_back(std::move(req));
  }
  inbox_ready_.notify_all();
  return stream;
}

void LlmEngine::abort(int64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    aborts_.push_back(request_id);
  }
  inbox_ready_.notify_all();
}

void LlmEngine::take_inbox() {
  std::vector<std::unique_ptr<Request>> added;
  std::vector<int64_t> aborted;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    added.swap(new_requests_);
    aborted.swap(aborts_);
  }
  for (auto& req : added) {
    Sequence* seq = req->seqs[0].get();
    seq->id = next_sequence_id_++;
    seq->request_id = req->id;
    seq->rng.seed(req->seed);
    scheduler_->add(seq);
    requests_[req->id] = std::move(req);
  }
  for (int64_t id : aborted) abort_now(id);
}

void LlmEngine::report_queue_time(Request& req, RequestOutput& out) {
  if (req.queue_reported || req.queue_seconds < 0) return;
  out.queue_seconds = req.queue_seconds;
  req.queue_reported = true;
}

void LlmEngine::finish_sequence(Request& req, Sequence* seq, const char* reason, Status error,
                                RequestOutput out) {
  scheduler_->finish(seq);
  if (!seq->swap_slots.empty()) {
    swapper_->release(seq->swap_slots);
    seq->swap_slots.clear();
  }
  out.request_id = req.id;
  out.index = seq->index;
  out.finished = true;
  out.finish_reason = reason;
  out.error = std::move(error);
  out.num_prompt_tokens = seq->prompt_len;
  out.num_cached_tokens = seq->num_cached_tokens;
  report_queue_time(req, out);
  --req.unfinished;
  // Outputs 1..n-1 that were never forked end with output 0.
  if (seq->index == 0 && !req.forked) {
    for (int32_t i = 1; i < req.params.n; ++i) {
      RequestOutput o = out;
      o.index = i;
      o.token_ids.clear();
      o.logprobs.clear();
      o.top_logprobs.clear();
      req.stream->push(std::move(o));
      --req.unfinished;
    }
    req.forked = true;
  }
  req.stream->push(std::move(out));
  if (req.unfinished == 0) requests_.erase(req.id);  // destroys req
}

void LlmEngine::abort_now(int64_t request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return;
  Request& req = *it->second;
  // Collect first: finishing the last output destroys the request.
  std::vector<Sequence*> live;
  for (auto& s : req.seqs) {
    if (s->status != SequenceStatus::kFinished) live.push_back(s.get());
  }
  for (Sequence* s : live) finish_sequence(req, s, "abort");
}

std::unique_ptr<Sequence> LlmEngine::new_sequence(Request& req, int32_t index) {
  auto seq = std::make_unique<Sequence>(next_sequence_id_++, options_.block_size);
  seq->request_id = req.id;
  seq->index = index;
  const Sequence& first = *req.seqs[0];
  seq->tokens.assign(first.tokens.begin(), first.tokens.begin() + first.prompt_len);
  seq->prompt_len = first.prompt_len;
  seq->max_tokens = first.max_tokens;
  seq->num_cached_tokens = first.num_cached_tokens;
  std::seed_seq seeds{req.seed, static_cast<uint64_t>(index)};
  seq->rng.seed(seeds);
  return seq;
}

void LlmEngine::emit_token(Request& req, Sequence* seq, float* logits) {
  const std::span<const int32_t> all(seq->tokens);
  const std::span<const int32_t> prompt = all.first(static_cast<size_t>(seq->prompt_len));
  const std::span<const int32_t> output = all.subspan(static_cast<size_t>(seq->prompt_len));
  const bool too_early = seq->num_output() < req.params.min_tokens;
  const std::span<const int32_t> suppressed =
      too_early ? std::span<const int32_t>(req.stop_ids) : std::span<const int32_t>();
  emit(req, seq, sampler_->sample(logits, req.params, seq->rng, prompt, output, suppressed));
}

LlmEngine::RowPath LlmEngine::row_path(const Request& req, const Sequence& seq) const {
  const SamplingParams& p = req.params;
  const bool forking = seq.index == 0 && !req.forked && p.n > 1;
  const bool many_stops = static_cast<int32_t>(req.stop_ids.size()) > kMaxPenaltyStopIds;
  if (p.logprobs.has_value() || forking || many_stops) return RowPath::kHost;
  return p.greedy() ? RowPath::kArgmax : RowPath::kSample;
}

void LlmEngine::add_penalties(int32_t row, const Request& req, const Sequence& seq) {
  const std::span<const int32_t> all(seq.tokens);
  const size_t prompt_len = static_cast<size_t>(seq.prompt_len);
  const bool suppress = seq.num_output() < req.params.min_tokens;
  collect_penalties(row, req.params, all.first(prompt_len), all.subspan(prompt_len),
                    suppress ? std::span<const int32_t>(req.stop_ids) : std::span<const int32_t>(),
                    token_entry_, penalty_rows_, penalty_tokens_);
}

void LlmEngine::emit(Request& req, Sequence* seq, const SampledToken& t) {
  seq->tokens.push_back(t.token);
  ++stats_.generated_tokens;

  RequestOutput out;
  out.request_id = req.id;
  out.index = seq->index;
  out.token_ids.push_back(t.token);
  if (req.params.logprobs) {
    out.logprobs.push_back(t.logprob);
    if (t.num_top > 0) out.top_logprobs.emplace_back(t.top.begin(), t.top.begin() + t.num_top);
  }
  report_queue_time(req, out);
  const bool stop =
      std::find(req.stop_ids.begin(), req.stop_ids.end(), t.token) != req.stop_ids.end();
  const bool length = seq->num_output() >= seq->max_tokens;
  // The last token and the end travel in one update, so a consumer knows which token ended it.
  if (stop) {
    finish_sequence(req, seq, "stop", {}, std::move(out));
  } else if (length) {
    finish_sequence(req, seq, "length", {}, std::move(out));
  } else {
    req.stream->push(std::move(out));
  }
}

void LlmEngine::sample(Request& req, Sequence* seq, float* logits) {
  if (seq->index == 0 && !req.forked && req.params.n > 1) {
    // Parallel sampling: outputs 1..n-1 share the prompt's blocks (copy-on-write) and draw
    // their first tokens from the same logits.
    req.forked = true;
    std::copy(logits, logits + config_.vocab_size, fork_logits_.begin());
    std::vector<Sequence*> forks;
    for (int32_t i = 1; i < req.params.n; ++i) {
      req.seqs.push_back(new_sequence(req, i));
      Sequence* child = req.seqs.back().get();
      child->num_computed = seq->num_computed;
      scheduler_->fork(*seq, child);
      forks.push_back(child);
    }
    for (Sequence* child : forks) {
      // Sampling modifies its input: each fork gets a fresh copy of the raw logits.
      std::copy(fork_logits_.begin(), fork_logits_.end(), logits);
      emit_token(req, child, logits);
    }
    std::copy(fork_logits_.begin(), fork_logits_.end(), logits);
  }
  emit_token(req, seq, logits);
}

void LlmEngine::fail_step(const StepPlan& plan, const Status& error) {
  TS_LOG(Error) << "forward step failed: " << error.message();
  for (const ScheduledSequence& s : plan.scheduled) {
    auto it = requests_.find(s.seq->request_id);
    if (it == requests_.end() || s.seq->status == SequenceStatus::kFinished) continue;
    finish_sequence(*it->second, s.seq, "error", error);
  }
}

void LlmEngine::apply_swaps(StepPlan& plan) {
  if (swapper_ == nullptr) return;
  // One batch per step (DESIGN.md §2). Swap-ins start from first_slot: the blocks before it
  // were found in the prefix cache, and their slots are freed unread.
  KvStepMoves moves;
  for (const SwapOut& out : plan.swap_out) moves.swap_outs.push_back(out.blocks);
  moves.spills = plan.spills;
  for (const SwapIn& in : plan.swap_in) {
    std::span<SwapSlot> slots(in.seq->swap_slots);
    swapper_->release(slots.first(static_cast<size_t>(in.first_slot)));
    moves.swap_ins.push_back({slots.subspan(static_cast<size_t>(in.first_slot)), in.blocks});
  }
  for (const PrefixRestore& r : plan.restores) moves.restores.push_back({r.hashes, r.blocks});
  KvStepResult result = swapper_->move(moves);

  // Failures make their sequences recompute, which changes `plan`: collect them first.
  std::vector<Sequence*> recompute;
  for (size_t i = 0; i < plan.swap_out.size(); ++i) {
    Sequence* seq = plan.swap_out[i].seq;
    if (result.swap_outs[i].is_ok()) {
      seq->swap_slots = std::move(result.swap_outs[i].value());
      continue;
    }
    TS_LOG(Warning) << "KV swap-out of sequence " << seq->id << " failed ("
                    << result.swap_outs[i].status().message() << "); it will be recomputed";
    recompute.push_back(seq);
  }
  for (size_t i = 0; i < plan.swap_in.size(); ++i) {
    Sequence* seq = plan.swap_in[i].seq;
    seq->swap_slots.clear();  // freed by move()
    if (result.swap_ins[i].is_ok()) continue;
    TS_LOG(Warning) << "KV swap-in of sequence " << seq->id << " failed ("
                    << result.swap_ins[i].message() << "); recomputing it";
    recompute.push_back(seq);
  }
  for (size_t i = 0; i < plan.restores.size(); ++i) {
    if (result.restores[i].is_ok()) continue;
    Sequence* seq = plan.restores[i].seq;
    TS_LOG(Warning) << "restoring cached prefix blocks of sequence " << seq->id << " failed ("
                    << result.restores[i].message() << "); recomputing them";
    recompute.push_back(seq);
  }
  for (Sequence* seq : recompute) {
    ++stats_.swap_failures;
    scheduler_->recompute(seq, plan);
  }
}

void LlmEngine::note_first_scheduled(const StepPlan& plan) {
  const auto now = std::chrono::steady_clock::now();
  for (const ScheduledSequence& s : plan.scheduled) {
    // Only a sequence still in its prompt can be scheduled for the first time, so decodes
    // skip the lookup.
    if (s.seq->index != 0 || s.seq->num_output() != 0) continue;
    auto it = requests_.find(s.seq->request_id);
    if (it == requests_.end() || it->second->queue_seconds >= 0) continue;
    it->second->queue_seconds = std::chrono::duration<double>(now - it->second->arrival).count();
  }
}

bool LlmEngine::step() {
  take_inbox();
  if (!scheduler_->has_work()) {
    publish_load();  // after aborts, the queues may have emptied
    return false;
  }
  StepPlan plan = scheduler_->schedule();
  // A lone sequence always fits (add_request checked), so work without a plan is a bug.
  TS_CHECK(!plan.empty()) << "scheduler stalled: " << scheduler_->num_waiting() << " waiting, "
                          << scheduler_->num_running() << " running, " << kv_->num_free_blocks()
                          << " free blocks";
  stats_.preemptions += static_cast<int64_t>(plan.preempted.size());
  note_first_scheduled(plan);
  apply_swaps(plan);
  if (plan.scheduled.empty()) return true;  // every sequence of the step is to be recomputed
  auto logits = runner_->execute(plan);
  if (!logits.is_ok()) {
    fail_step(plan, logits.status());
    return true;
  }
  scheduler_->update(plan);
  ++stats_.steps;
  stats_.scheduled_seqs += static_cast<int64_t>(plan.scheduled.size());
  stats_.scheduled_tokens += plan.num_tokens;
  for (const ScheduledSequence& s : plan.scheduled) stats_.decode_seqs += s.num_tokens == 1;
  const std::vector<int32_t>& sampled = runner_->sampled();
  auto request_of = [this](const Sequence* seq) -> Request& {
    auto it = requests_.find(seq->request_id);
    TS_CHECK(it != requests_.end()) << "sequence " << seq->id << " without a request";
    return *it->second;
  };
  // Rows without logprobs or forks are decided where the logits are (on a GPU only token ids
  // cross the bus): penalties and suppressed tokens applied there, then the greedy ones by their
  // arg-max, the others by the backend's sampler with a draw from the sequence's generator. The
  // rest go to the host sampler (on a GPU, copied back first).
  argmax_rows_.clear();
  sample_rows_.clear();
  penalty_rows_.clear();
  penalty_tokens_.clear();
  row_tokens_.assign(sampled.size(), -1);
  for (size_t r = 0; r < sampled.size(); ++r) {
    Sequence* seq = plan.scheduled[static_cast<size_t>(sampled[r])].seq;
    const Request& req = request_of(seq);
    const RowPath path = row_path(req, *seq);
    if (path != RowPath::kHost) add_penalties(static_cast<int32_t>(r), req, *seq);
    switch (path) {
      case RowPath::kArgmax:
        argmax_rows_.push_back(static_cast<int32_t>(r));
        break;
      case RowPath::kSample: {
        SampleRow row;
        row.row = static_cast<int32_t>(r);
        row.temperature = req.params.temperature;
        row.top_k = req.params.top_k;
        row.top_p = req.params.top_p;
        row.min_p = req.params.min_p;
        row.uniform =
            std::generate_canonical<double, std::numeric_limits<double>::digits>(seq->rng);
        sample_rows_.push_back(row);
        break;
      }
      case RowPath::kHost:
        break;
    }
  }
  runner_->apply_penalties(penalty_rows_, penalty_tokens_);
  argmax_tokens_.resize(argmax_rows_.size());
  runner_->argmax(argmax_rows_, argmax_tokens_.data());
  sample_tokens_.resize(sample_rows_.size());
  runner_->sample(sample_rows_, sample_tokens_.data());
  for (size_t i = 0; i < argmax_rows_.size(); ++i) {
    row_tokens_[static_cast<size_t>(argmax_rows_[i])] = argmax_tokens_[i];
  }
  for (size_t i = 0; i < sample_rows_.size(); ++i) {
    row_tokens_[static_cast<size_t>(sample_rows_[i].row)] = sample_tokens_[i];
  }
  for (size_t r = 0; r < sampled.size(); ++r) {
    Sequence* seq = plan.scheduled[static_cast<size_t>(sampled[r])].seq;
    Request& req = request_of(seq);
    if (row_tokens_[r] >= 0) {
      SampledToken t;
      t.token = row_tokens_[r];
      emit(req, seq, t);
    } else {
      sample(req, seq, runner_->host_row(static_cast<int32_t>(r)));
    }
  }
  publish_load();
  return true;
}

bool LlmEngine::has_unfinished() {
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    if (!new_requests_.empty()) return true;
  }
  return !requests_.empty();
}

void LlmEngine::start() {
  TS_CHECK(!loop_.joinable()) << "engine loop started twice";
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    stopping_ = false;
  }
  loop_ = std::thread([this] {
    for (;;) {
      if (step()) continue;
      std::unique_lock<std::mutex> lock(inbox_mutex_);
      inbox_ready_.wait(lock,
                        [this] { return stopping_ || !new_requests_.empty() || !aborts_.empty(); });
      if (stopping_) return;
    }
  });
}

void LlmEngine::stop() {
  if (!loop_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(inbox_mutex_);
    stopping_ = true;
  }
  inbox_ready_.notify_all();
  loop_.join();
}

Result<GenerateResult> LlmEngine::generate(const std::vector<int32_t>& prompt,
                                           const SamplingParams& params,
                                           const TokenCallback& on_token) {
  TS_CHECK(!loop_.joinable()) << "generate() while the engine loop runs";
  SamplingParams one = params;
  one.n = 1;
  TS_ASSIGN_OR_RETURN(std::shared_ptr<RequestStream> stream, add_request(prompt, one));
  GenerateResult result;
  result.prompt_token_ids = prompt;
  bool stopped_by_callback = false;
  for (int idle_steps = 0;;) {
    while (auto out = stream->poll()) {
      for (size_t i = 0; i < out->token_ids.size() && !stopped_by_callback; ++i) {
        result.token_ids.push_back(out->token_ids[i]);
        if (i < out->logprobs.size()) result.logprobs.push_back(out->logprobs[i]);
        if (on_token && !on_token(out->token_ids[i])) {
          stopped_by_callback = true;
          abort(stream->request_id());
        }
      }
      if (out->finished) {
        if (out->finish_reason == "error") return out->error;
        result.finish_reason = stopped_by_callback ? "stop" : out->finish_reason;
        result.num_cached_tokens = out->num_cached_tokens;
      }
    }
    if (stream->done()) break;
    // An idle step publishes queued aborts; two in a row with the request unfinished is a bug.
    idle_steps = step() ? 0 : idle_steps + 1;
    TS_CHECK_LT(idle_steps, 2) << "request " << stream->request_id() << " stalled";
  }
  return result;
}

Result<std::vector<std::vector<float>>> LlmEngine::score(const std::vector<int32_t>& prompt,
                                                         const std::vector<int32_t>& continuation,
                                                         int32_t chunk_size) {
  TS_CHECK(!loop_.joinable() && requests_.empty()) << "score() needs an idle engine";
  TS_RETURN_IF_ERROR(check_prompt(prompt));
  if (!continuation.empty()) {
    TS_RETURN_IF_ERROR(check_prompt(continuation).with_context("continuation"));
  }
  TS_RETURN_IF_ERROR(scheduler_->check_fits(static_cast<int32_t>(prompt.size()),
                                            static_cast<int32_t>(continuation.size())));
  const int32_t max_step = std::min(options_.max_num_batched_tokens, max_model_len_);
  const int32_t chunk = chunk_size > 0 ? std::min(chunk_size, max_step) : max_step;
  // One sequence driven by hand, without the prefix cache: every logit is computed.
  Sequence seq(next_sequence_id_++, options_.block_size);
  seq.tokens = prompt;
  seq.prompt_len = static_cast<int32_t>(prompt.size());
  std::vector<std::vector<float>> out;
  const PrefixHit none;
  bool admitted = false;
  Status status;
  for (size_t next = 0;;) {
    const int32_t n = std::min(seq.num_uncomputed(), chunk);
    const int32_t total = seq.num_computed + n;
    StepPlan plan;
    if (!admitted) {
      kv_->admit(seq.kv, none, total);
      admitted = true;
    } else {
      kv_->append(seq.kv, total, &plan.copies);
    }
    plan.scheduled.push_back({&seq, n});
    plan.num_tokens = n;
    auto logits = runner_->execute(plan);
    if (!logits.is_ok()) {
      status = logits.status();
      break;
    }
    seq.num_computed = total;
    if (seq.num_uncomputed() > 0) continue;
    const float* row = runner_->host_row(0);
    out.emplace_back(row, row + config_.vocab_size);
    if (next == continuation.size()) break;
    seq.tokens.push_back(continuation[next++]);
  }
  kv_->free(seq.kv);
  if (!status.is_ok()) return status;
  return out;
}

}  // namespace tierserve

#include "kernels/cuda/cuda_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/topology.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_types.h"
#include "kernels/op_checks.h"

namespace tierserve::cuda {
namespace {

constexpr size_t kFences = 256;       // events in the fence ring
constexpr size_t kAllocAlign = 4096;  // Backend::allocate's alignment for large blocks
// Device memory CUDA, cuBLAS and CUB may allocate after start-up without asking (lazily loaded
// kernel modules, graph instantiation), kept out of the budget.
constexpr uint64_t kLazyDeviceBytes = uint64_t{256} << 20;

// The device each thread last bound (CUDA's current device is per thread, and the engine and
// copy threads are not the thread that created the backend).
thread_local int bound_device = -1;

void bind_device(int device) {
  if (bound_device == device) return;
  TS_CUDA_CHECK(cudaSetDevice(device));
  bound_device = device;
}

bool is_device_pointer(const void* p) {
  cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// The NUMA node of the GPU's PCI device (the kernel's numbering), or -1.
int gpu_numa_node(int device) {
  char bus[64] = {0};
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus), device) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  std::string id(bus);
  for (char& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::ifstream in("/sys/bus/pci/devices/" + id + "/numa_node");
  int node = -1;
  if (!(in >> node)) return -1;
  return node;
}

const char* error_name(int32_t code) {
  switch (static_cast<DeviceError>(code)) {
    case DeviceError::kTokenId:
      return "token id outside the vocabulary";
    case DeviceError::kRow:
      return "gather_rows index outside the source";
    case DeviceError::kPosition:
      return "rope position outside the table";
    case DeviceError::kSlot:
      return "write_kv slot outside the cache";
    case DeviceError::kBlock:
      return "paged attention block id outside the cache";
    default:
      return "unknown device error";
  }
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {}
  ~CudaBackend() override;

  Status init();

  std::string_view name() const override { return "cuda"; }
  DeviceKind device() const override { return DeviceKind::kCuda; }

  uint64_t memory_capacity() const override { return capacity_; }
  Result<void*> allocate(size_t bytes) override;
  void deallocate(void* ptr) override;
  Result<void*> allocate_pinned_host(size_t bytes) override;
  void free_pinned_host(void* ptr) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;

  uint64_t record_fence() override;
  void wait_fence(uint64_t fence) override;

  bool supports_graphs() const override { return true; }
  Status begin_capture() override;
  Result<int32_t> end_capture() override;
  void replay(int32_t graph) override;

  uint64_t reserved_bytes(const StepLimits& limits) const override;
  Status reserve_steps(const StepLimits& limits) override;
  Status reserve_sampling(const StepLimits& limits);
  StepInputs stage_step(const StepInputs& host) override;

  void gemm(const TensorView& x, const TensorView& w, const TensorView* bias,
            const TensorView& y) override {
    gemm_->run(x, w, bias, y);
  }
  void rmsnorm(const TensorView& x, const TensorView& weight, float eps,
               const TensorView& y) override;
  void add_rmsnorm(const TensorView& residual, const TensorView& x, const TensorView& weight,
                   float eps, const TensorView& y) override;
  void rope(const TensorView& q, const TensorView& k, const int32_t* positions,
            const RopeTable& table) override;
  void silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) override;
  void embedding(const int32_t* ids, const TensorView& table, const TensorView& out) override;
  void gather_rows(const TensorView& src, const int32_t* rows, const TensorView& dst) override;
  void softmax(const TensorView& x) override;
  void argmax_rows(const TensorView& logits, const int32_t* rows, int32_t num_rows,
                   int32_t* out) override;
  void sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                   int32_t* out) override;
  void apply_penalties(const TensorView& logits, const PenaltyRow* rows, int32_t num_rows,
                       const PenaltyToken* tokens, int32_t num_tokens) override;
  void write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                const AttentionMetadata& meta, const KvCacheView& cache) override;
  void paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                       const KvCacheView& cache, const AttentionParams& params,
                       const TensorView& out) override;

 private:
  void check_rows_on_device(const TensorView& t, int ndim, const char* what) const {
    check_rows(t, DType::kF32, ndim, what, DeviceKind::kCuda);
  }
  KvCacheArgs cache_args(const KvCacheView& cache) const;
  // The host copy of the step that `meta` was staged from (meta must come from stage_step).
  const AttentionMetadata& staged_host(const AttentionMetadata& meta) const;

  CudaBackendOptions options_;
  uint64_t capacity_ = 0;
  uint64_t in_use_at_start_ = 0;  // total - free device memory when init() ran
  cudaStream_t compute_ = nullptr, h2d_ = nullptr, d2h_ = nullptr;
  std::unique_ptr<CudaGemm> gemm_;

  // Fences: event (n % kFences) marks fence n.
  std::mutex fence_mu_;
  uint64_t fence_count_ = 0;
  std::vector<cudaEvent_t> fence_events_;

  // Kernel-detected input errors (mapped pinned memory).
  DeviceErrors* errors_host_ = nullptr;
  DeviceErrors* errors_dev_ = nullptr;

  // Step inputs: packed into pinned host memory, copied once to device memory.
  StepLimits limits_;
  size_t stage_ints_ = 0;
  int32_t* stage_host_ = nullptr;
  int32_t* stage_dev_ = nullptr;
  cudaEvent_t stage_copied_ = nullptr;  // the last staging copy has read stage_host_
  StepInputs staged_host_;              // the last step, host side (pointers into stage_host_)
  StepInputs staged_dev_;               // the same, device side

  // argmax_rows: [max_seqs] row indices then [max_seqs] results, pinned and on the device.
  int32_t* argmax_host_ = nullptr;
  int32_t* argmax_dev_ = nullptr;
  // sample_rows (when reserve_steps names a vocabulary): the rows' parameters, pinned and on the
  // device, and the sort's buffers.
  DeviceSampleRow* sample_host_ = nullptr;
  DeviceSampleRow* sample_dev_ = nullptr;
  SamplingBuffers sampling_;
  int32_t* sampling_ids_in_ = nullptr;
  // apply_penalties: rows then tokens, pinned and on the device (reserve_steps).
  char* penalty_host_ = nullptr;
  char* penalty_dev_ = nullptr;

  // Graphs: instantiated executables, by id. While capturing, attention covers the longest
  // context a block table can hold, since the graph replays with other lengths.
  std::vector<cudaGraphExec_t> graphs_;
  bool capturing_ = false;
  std::string capture_error_;  // why an op could not be captured (end_capture returns it)

  float* attn_scratch_ = nullptr;
  int64_t attn_scratch_floats_ = 0;

  std::mutex alloc_mu_;
  std::unordered_map<void*, void*> raw_of_;  // aligned pointer -> cudaMalloc's pointer
  // Pinned host memory on the GPU's NUMA node: mmap'ed, bound with hwloc, registered with CUDA.
  Topology topology_;
  int numa_node_ = -1;                        // the GPU's node, -1 when unknown
  std::unordered_map<void*, size_t> mapped_;  // registered mapping -> its length
};

CudaBackend::~CudaBackend() {
  if (compute_ != nullptr) cudaStreamSynchronize(compute_);
  gemm_.reset();
  for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
  for (cudaEvent_t e : fence_events_) cudaEventDestroy(e);
  if (stage_copied_ != nullptr) cudaEventDestroy(stage_copied_);
  cudaFreeHost(stage_host_);
  cudaFree(stage_dev_);
  cudaFreeHost(argmax_host_);
  cudaFree(argmax_dev_);
  cudaFreeHost(penalty_host_);
  cudaFree(penalty_dev_);
  cudaFreeHost(sample_host_);
  cudaFree(sample_dev_);
  cudaFree(sampling_.sort_temp);
  cudaFree(sampling_.keys);
  cudaFree(sampling_.ids);
  cudaFree(sampling_ids_in_);
  cudaFree(sampling_.begin);
  cudaFree(attn_scratch_);
  cudaFreeHost(errors_host_);
  for (cudaStream_t s : {compute_, h2d_, d2h_}) {
    if (s != nullptr) cudaStreamDestroy(s);
  }
}

Status CudaBackend::init() {
  TS_RETURN_IF_ERROR(cuda_status(cudaSetDevice(options_.device_index),
                                 "selecting CUDA device " + std::to_string(options_.device_index)));
  bound_device = options_.device_index;
  size_t free_bytes = 0, total_bytes = 0;
  TS_RETURN_IF_ERROR(cuda_status(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  capacity_ = total_bytes;
  in_use_at_start_ = total_bytes - free_bytes;
  numa_node_ = gpu_numa_node(options_.device_index);
  for (cudaStream_t* s : {&compute_, &h2d_, &d2h_}) {
    TS_RETURN_IF_ERROR(
        cuda_status(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), "creating a stream"));
  }
  fence_events_.resize(kFences, nullptr);
  for (cudaEvent_t& e : fence_events_) {
    TS_RETURN_IF_ERROR(
        cuda_status(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync),
                    "creating an event"));
  }
  TS_RETURN_IF_ERROR(cuda_status(
      cudaEventCreateWithFlags(&stage_copied_, cudaEventDisableTiming | cudaEventBlockingSync),
      "creating an event"));
  void* errors = nullptr;
  TS_RETURN_IF_ERROR(cuda_status(cudaHostAlloc(&errors, sizeof(DeviceErrors), cudaHostAllocMapped),
                                 "mapped error record"));
  errors_host_ = static_cast<DeviceErrors*>(errors);
  *errors_host_ = DeviceErrors{};
  void* errors_dev = nullptr;
  TS_RETURN_IF_ERROR(
      cuda_status(cudaHostGetDevicePointer(&errors_dev, errors, 0), "mapped error record"));
  errors_dev_ = static_cast<DeviceErrors*>(errors_dev);
  attn_scratch_floats_ = static_cast<int64_t>(options_.attention_scratch_bytes / sizeof(float));
  TS_RETURN_IF_ERROR(
      cuda_status(cudaMalloc(reinterpret_cast<void**>(&attn_scratch_),
                             static_cast<size_t>(attn_scratch_floats_) * sizeof(float)),
                  "attention scratch"));
  TS_ASSIGN_OR_RETURN(gemm_, CudaGemm::create(compute_, options_.deterministic));
  return Status::ok();
}

Result<void*> CudaBackend::allocate(size_t bytes) {
  bind_device(options_.device_index);
  if (bytes > (size_t{1} << 50)) {
    return resource_exhausted("allocating " + std::to_string(bytes) + " bytes of GPU memory");
  }
  const size_t padded = bytes >= kAllocAlign ? bytes + kAllocAlign : std::max<size_t>(bytes, 64);
  void* raw = nullptr;
  TS_RETURN_IF_ERROR(cuda_status(cudaMalloc(&raw, padded),
                                 "allocating " + std::to_string(bytes) + " bytes of GPU memory"));
  void* aligned = raw;
  if (bytes >= kAllocAlign) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(raw);
    aligned = reinterpret_cast<void*>((p + kAllocAlign - 1) & ~(uintptr_t{kAllocAlign} - 1));
  }
  std::lock_guard<std::mutex> lock(alloc_mu_);
  raw_of_[aligned] = raw;
  return aligned;
}

void CudaBackend::deallocate(void* ptr) {
  if (ptr == nullptr) return;
  bind_device(options_.device_index);
  void* raw = nullptr;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    auto it = raw_of_.find(ptr);
    TS_CHECK(it != raw_of_.end()) << "deallocate of a pointer this backend did not allocate";
    raw = it->second;
    raw_of_.erase(it);
  }
  TS_CUDA_CHECK(cudaFree(raw));
}

Result<void*> CudaBackend::allocate_pinned_host(size_t bytes) {
  bind_device(options_.device_index);
  if (numa_node_ >= 0 && bytes > 0) {
    // NUMA-local: pages bound to the GPU's node before they are touched, then pinned.
    const size_t len = (bytes + 4095) & ~size_t{4095};
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      if (topology_.bind_memory_to_numa_node(m, len, numa_node_) &&
          cudaHostRegister(m, len, cudaHostRegisterPortable) == cudaSuccess) {
        std::lock_guard<std::mutex> lock(alloc_mu_);
        mapped_[m] = len;
        return m;
      }
      cudaGetLastError();
      munmap(m, len);
    }
  }
  void* p = nullptr;
  TS_RETURN_IF_ERROR(
      cuda_status(cudaHostAlloc(&p, bytes, cudaHostAllocPortable),
                  "allocating " + std::to_string(bytes) + " bytes of pinned host memory"));
  return p;
}

void CudaBackend::free_pinned_host(void* ptr) {
  if (ptr == nullptr) return;
  size_t len = 0;
  {
    std::lock_guard<std::mutex> lock(alloc_mu_);
    auto it = mapped_.find(ptr);
    if (it != mapped_.end()) {
      len = it->second;
      mapped_.erase(it);
    }
  }
  if (len == 0) {
    TS_CUDA_CHECK(cudaFreeHost(ptr));
    return;
  }
  TS_CUDA_CHECK(cudaHostUnregister(ptr));
  munmap(ptr, len);
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  const bool dst_dev = is_device_pointer(dst), src_dev = is_device_pointer(src);
  if (!dst_dev && !src_dev) {
    std::memcpy(dst, src, bytes);
    return;
  }
  bind_device(options_.device_index);
  cudaStream_t stream = dst_dev && !src_dev ? h2d_ : d2h_;
  // Waits for this copy alone (its own event), not for other threads' copies on the stream.
  cudaEvent_t done = nullptr;
  TS_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming | cudaEventBlockingSync));
  TS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  TS_CUDA_CHECK(cudaEventRecord(done, stream));
  TS_CUDA_CHECK(cudaEventSynchronize(done));
  TS_CUDA_CHECK(cudaEventDestroy(done));
}

void CudaBackend::synchronize() {
  bind_device(options_.device_index);
  TS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  const DeviceErrors e = *errors_host_;
  TS_CHECK(e.code == 0) << error_name(e.code) << ": element " << e.index << " is " << e.value
                        << ", the bound is " << e.limit;
}

uint64_t CudaBackend::record_fence() {
  bind_device(options_.device_index);
  std::lock_guard<std::mutex> lock(fence_mu_);
  const uint64_t n = ++fence_count_;
  TS_CUDA_CHECK(cudaEventRecord(fence_events_[n % kFences], compute_));
  return n;
}

void CudaBackend::wait_fence(uint64_t fence) {
  if (fence == 0) return;
  bind_device(options_.device_index);
  cudaEvent_t e;
  {
    std::lock_guard<std::mutex> lock(fence_mu_);
    TS_CHECK(fence <= fence_count_) << "fence " << fence << " was never recorded";
    e = fence_events_[fence % kFences];
  }
  // A recycled event marks a later point of the stream: waiting for it is waiting longer.
  TS_CUDA_CHECK(cudaEventSynchronize(e));
}

uint64_t CudaBackend::reserved_bytes(const StepLimits& limits) const {
  // What was in use when the backend started (this process's CUDA context, other processes on
  // the GPU), and what CUDA, cuBLAS and CUB allocate later on their own (kernel modules loaded
  // lazily, graph instantiation): the budget of --gpu-memory-utilization never counts on them.
  uint64_t bytes = in_use_at_start_ + kLazyDeviceBytes;
  // Created with the backend: attention scratch, GEMM scratch and cuBLAS workspace.
  bytes += options_.attention_scratch_bytes + kGemmScratchBytes +
           (options_.deterministic ? uint64_t{1} << 20 : 0);
  const uint64_t seqs = static_cast<uint64_t>(std::max(limits.max_seqs, 0));
  bytes +=
      static_cast<uint64_t>(std::max(limits.max_tokens, 0)) * 3 * sizeof(int32_t) +
      seqs * (3 + static_cast<uint64_t>(std::max(limits.max_blocks_per_seq, 0))) * sizeof(int32_t) +
      2 * seqs * sizeof(int32_t);
  if (limits.vocab_size > 0) {
    // Sorted keys, sorted ids, input ids, and CUB's scratch.
    const uint64_t items = seqs * static_cast<uint64_t>(limits.vocab_size);
    size_t sort_bytes = 0;
    if (sampling_workspace(limits.max_seqs, limits.vocab_size, &sort_bytes) != cudaSuccess) {
      cudaGetLastError();
      sort_bytes = items * 8;
    }
    bytes += items * 12 + sort_bytes + seqs * (sizeof(DeviceSampleRow) + 2 * sizeof(int32_t));
  }
  bytes += seqs * sizeof(PenaltyRow) +
           static_cast<uint64_t>(std::max(limits.max_penalty_tokens, 0)) * sizeof(PenaltyToken);
  return bytes;
}

Status CudaBackend::begin_capture() {
  TS_CHECK(!capturing_) << "nested capture";
  bind_device(options_.device_index);
  // Thread-local mode: the copy threads' own (uncaptured) copies do not invalidate the capture.
  TS_RETURN_IF_ERROR(cuda_status(cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal),
                                 "beginning a capture"));
  capturing_ = true;
  capture_error_.clear();
  return Status::ok();
}

Result<int32_t> CudaBackend::end_capture() {
  TS_CHECK(capturing_) << "end_capture without begin_capture";
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  TS_RETURN_IF_ERROR(cuda_status(cudaStreamEndCapture(compute_, &graph), "ending a capture"));
  if (!capture_error_.empty()) {
    cudaGraphDestroy(graph);
    return resource_exhausted(capture_error_);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  TS_RETURN_IF_ERROR(cuda_status(err, "instantiating a graph"));
  graphs_.push_back(exec);
  return static_cast<int32_t>(graphs_.size() - 1);
}

void CudaBackend::replay(int32_t graph) {
  TS_CHECK(graph >= 0 && static_cast<size_t>(graph) < graphs_.size()) << "graph " << graph;
  bind_device(options_.device_index);
  TS_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<size_t>(graph)], compute_));
}

Status CudaBackend::reserve_steps(const StepLimits& limits) {
  if (limits.max_tokens <= 0 || limits.max_seqs <= 0 || limits.max_blocks_per_seq <= 0) {
    return invalid_argument("step limits must be positive");
  }
  bind_device(options_.device_index);
  TS_CHECK(stage_host_ == nullptr) << "reserve_steps called twice";
  limits_ = limits;
  const size_t t = static_cast<size_t>(limits.max_tokens);
  const size_t s = static_cast<size_t>(limits.max_seqs);
  // token ids, positions, slots; query_start, seq_lens, logit rows; block tables.
  stage_ints_ = 3 * t + 3 * s + 1 + s * static_cast<size_t>(limits.max_blocks_per_seq);
  void* host = nullptr;
  TS_RETURN_IF_ERROR(
      cuda_status(cudaHostAlloc(&host, stage_ints_ * sizeof(int32_t), cudaHostAllocPortable),
                  "step-input staging"));
  stage_host_ = static_cast<int32_t*>(host);
  TS_RETURN_IF_ERROR(
      cuda_status(cudaMalloc(reinterpret_cast<void**>(&stage_dev_), stage_ints_ * sizeof(int32_t)),
                  "step-input buffer"));
  const size_t argmax_bytes = 2 * s * sizeof(int32_t);
  void* argmax_host = nullptr;
  TS_RETURN_IF_ERROR(cuda_status(cudaHostAlloc(&argmax_host, argmax_bytes, cudaHostAllocPortable),
                                 "arg-max staging"));
  argmax_host_ = static_cast<int32_t*>(argmax_host);
  TS_RETURN_IF_ERROR(cuda_status(cudaMalloc(reinterpret_cast<void**>(&argmax_dev_), argmax_bytes),
                                 "arg-max buffer"));
  if (limits.vocab_size > 0) TS_RETURN_IF_ERROR(reserve_sampling(limits));
  if (limits.max_penalty_tokens > 0) {
    const size_t bytes = s * sizeof(PenaltyRow) +
                         static_cast<size_t>(limits.max_penalty_tokens) * sizeof(PenaltyToken);
    void* host = nullptr;
    TS_RETURN_IF_ERROR(
        cuda_status(cudaHostAlloc(&host, bytes, cudaHostAllocPortable), "penalty staging"));
    penalty_host_ = static_cast<char*>(host);
    TS_RETURN_IF_ERROR(
        cuda_status(cudaMalloc(reinterpret_cast<void**>(&penalty_dev_), bytes), "penalty buffer"));
  }
  return Status::ok();
}

Status CudaBackend::reserve_sampling(const StepLimits& limits) {
  bind_device(options_.device_index);
  const int64_t items = static_cast<int64_t>(limits.max_seqs) * limits.vocab_size;
  TS_CHECK(items < (int64_t{1} << 31)) << "sampling buffers of " << items << " logits";
  const size_t s = static_cast<size_t>(limits.max_seqs);
  void* host = nullptr;
  TS_RETURN_IF_ERROR(cuda_status(
      cudaHostAlloc(&host, s * sizeof(DeviceSampleRow), cudaHostAllocPortable), "sampling rows"));
  sample_host_ = static_cast<DeviceSampleRow*>(host);
  auto device = [](void** p, size_t bytes, const char* what) {
    return cuda_status(cudaMalloc(p, bytes), what);
  };
  TS_RETURN_IF_ERROR(
      device(reinterpret_cast<void**>(&sample_dev_), s * sizeof(DeviceSampleRow), "sampling rows"));
  TS_RETURN_IF_ERROR(
      cuda_status(sampling_workspace(limits.max_seqs, limits.vocab_size, &sampling_.sort_bytes),
                  "sizing the sampling sort"));
  TS_RETURN_IF_ERROR(device(&sampling_.sort_temp, sampling_.sort_bytes, "sampling sort"));
  const size_t n = static_cast<size_t>(items);
  TS_RETURN_IF_ERROR(
      device(reinterpret_cast<void**>(&sampling_.keys), n * sizeof(float), "sampling keys"));
  TS_RETURN_IF_ERROR(
      device(reinterpret_cast<void**>(&sampling_.ids), n * sizeof(int32_t), "sampling ids"));
  TS_RETURN_IF_ERROR(
      device(reinterpret_cast<void**>(&sampling_ids_in_), n * sizeof(int32_t), "sampling ids"));
  sampling_.ids_in = sampling_ids_in_;
  TS_RETURN_IF_ERROR(device(reinterpret_cast<void**>(&sampling_.begin), 2 * s * sizeof(int32_t),
                            "sampling offsets"));
  sampling_.end = sampling_.begin + s;
  TS_CUDA_CHECK(launch_fill_ids(sampling_ids_in_, limits.max_seqs, limits.vocab_size, compute_));
  TS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  return Status::ok();
}

StepInputs CudaBackend::stage_step(const StepInputs& host) {
  TS_CHECK(stage_host_ != nullptr) << "stage_step before reserve_steps";
  bind_device(options_.device_index);  // the engine thread's first call of a step
  const AttentionMetadata& m = host.attn;
  const int32_t t = m.num_tokens, s = m.num_seqs;
  TS_CHECK(t >= 0 && t <= limits_.max_tokens && s >= 0 && s <= limits_.max_seqs &&
           host.num_logit_rows >= 0 && host.num_logit_rows <= limits_.max_seqs &&
           m.max_blocks_per_seq <= limits_.max_blocks_per_seq)
      << "step of " << t << " tokens, " << s << " sequences, " << host.num_logit_rows
      << " logit rows and " << m.max_blocks_per_seq << " blocks per sequence beyond the reserved "
      << limits_.max_tokens << ", " << limits_.max_seqs << ", " << limits_.max_blocks_per_seq;
  if (s > 0) {
    TS_CHECK(m.query_start[0] == 0 && m.query_start[s] == t) << "query_start must run 0.." << t;
    for (int32_t i = 0; i < s; ++i) {
      const int32_t q_len = m.query_start[i + 1] - m.query_start[i];
      TS_CHECK(q_len >= 0 && m.seq_lens[i] >= q_len)
          << "sequence " << i << ": " << q_len << " query tokens, " << m.seq_lens[i] << " cached";
    }
  }
  // The previous step's copy must have read the staging buffer before it is rewritten.
  TS_CUDA_CHECK(cudaEventSynchronize(stage_copied_));
  int32_t* at = stage_host_;
  StepInputs h = host;
  auto put = [&at](const int32_t* src, int64_t n) -> const int32_t* {
    if (src == nullptr || n <= 0) return nullptr;
    std::memcpy(at, src, static_cast<size_t>(n) * sizeof(int32_t));
    const int32_t* placed = at;
    at += n;
    return placed;
  };
  h.token_ids = put(host.token_ids, t);
  h.positions = put(host.positions, t);
  h.attn.slot_mapping = put(m.slot_mapping, t);
  h.attn.query_start = put(m.query_start, s > 0 ? s + 1 : 0);
  h.attn.seq_lens = put(m.seq_lens, s);
  h.attn.block_tables = put(m.block_tables, static_cast<int64_t>(s) * m.max_blocks_per_seq);
  h.logit_rows = put(host.logit_rows, host.num_logit_rows);
  const size_t used = static_cast<size_t>(at - stage_host_);
  if (used > 0) {
    TS_CUDA_CHECK(cudaMemcpyAsync(stage_dev_, stage_host_, used * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, compute_));
  }
  TS_CUDA_CHECK(cudaEventRecord(stage_copied_, compute_));
  auto dev = [this](const int32_t* p) -> const int32_t* {
    return p == nullptr ? nullptr : stage_dev_ + (p - stage_host_);
  };
  StepInputs d = h;
  d.token_ids = dev(h.token_ids);
  d.positions = dev(h.positions);
  d.attn.slot_mapping = dev(h.attn.slot_mapping);
  d.attn.query_start = dev(h.attn.query_start);
  d.attn.seq_lens = dev(h.attn.seq_lens);
  d.attn.block_tables = dev(h.attn.block_tables);
  d.logit_rows = dev(h.logit_rows);
  staged_host_ = h;
  staged_dev_ = d;
  return d;
}

const AttentionMetadata& CudaBackend::staged_host(const AttentionMetadata& meta) const {
  TS_CHECK(meta.num_seqs == 0 || (meta.seq_lens == staged_dev_.attn.seq_lens &&
                                  meta.query_start == staged_dev_.attn.query_start))
      << "attention metadata must come from the last stage_step";
  return staged_host_.attn;
}

KvCacheArgs CudaBackend::cache_args(const KvCacheView& cache) const {
  const KvBlockLayout& l = cache.layout;
  TS_CHECK(cache.base != nullptr && cache.num_blocks > 0 && l.block_size > 0 &&
           l.num_kv_heads > 0 && l.head_dim > 0 && l.num_layers > 0 && is_float_dtype(l.dtype))
      << "KV cache view: " << cache.num_blocks << " blocks of " << l.block_size << " tokens, "
      << l.num_layers << " layers, " << l.num_kv_heads << " KV heads of " << l.head_dim << ", "
      << dtype_name(l.dtype);
  KvCacheArgs a;
  a.base = static_cast<char*>(cache.base);
  a.block_bytes = static_cast<int64_t>(l.block_bytes());
  a.num_blocks = cache.num_blocks;
  a.block_size = l.block_size;
  a.num_kv_heads = l.num_kv_heads;
  a.head_dim = l.head_dim;
  a.layer_elems = l.layer_elems();
  a.kv_elems = l.kv_elems();
  a.type = elem_type(l.dtype);
  return a;
}

void CudaBackend::rmsnorm(const TensorView& x, const TensorView& weight, float eps,
                          const TensorView& y) {
  check_rows_on_device(x, 2, "rmsnorm x");
  check_rows_on_device(y, 2, "rmsnorm y");
  TS_CHECK(x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1))
      << "rmsnorm " << describe(x) << " -> " << describe(y);
  check_vector(weight, x.dim(1), "norm weight", DeviceKind::kCuda);
  TS_CUDA_CHECK(launch_rmsnorm(x.ptr<const float>(), x.stride(0), nullptr, 0, nullptr, 0,
                               weight.data, elem_type(weight.dtype), eps, y.ptr<float>(),
                               y.stride(0), x.dim(0), x.dim(1), compute_));
}

void CudaBackend::add_rmsnorm(const TensorView& residual, const TensorView& x,
                              const TensorView& weight, float eps, const TensorView& y) {
  check_rows_on_device(residual, 2, "add_rmsnorm residual");
  check_rows_on_device(x, 2, "add_rmsnorm x");
  check_rows_on_device(y, 2, "add_rmsnorm y");
  TS_CHECK(residual.dim(0) == x.dim(0) && residual.dim(1) == x.dim(1) && y.dim(0) == x.dim(0) &&
           y.dim(1) == x.dim(1))
      << "add_rmsnorm " << describe(residual) << " + " << describe(x) << " -> " << describe(y);
  check_vector(weight, x.dim(1), "norm weight", DeviceKind::kCuda);
  TS_CUDA_CHECK(launch_rmsnorm(nullptr, 0, residual.ptr<float>(), residual.stride(0),
                               x.ptr<const float>(), x.stride(0), weight.data,
                               elem_type(weight.dtype), eps, y.ptr<float>(), y.stride(0), x.dim(0),
                               x.dim(1), compute_));
}

void CudaBackend::rope(const TensorView& q, const TensorView& k, const int32_t* positions,
                       const RopeTable& table) {
  check_rows_on_device(q, 3, "rope q");
  check_rows_on_device(k, 3, "rope k");
  const int64_t t = q.dim(0), head_dim = q.dim(2);
  TS_CHECK(k.dim(0) == t && k.dim(2) == head_dim)
      << "rope q " << describe(q) << " vs k " << describe(k);
  TS_CHECK(table.rotary_dim > 0 && table.rotary_dim % 2 == 0 && table.rotary_dim <= head_dim &&
           table.rotary_dim / 2 <= 256 && table.inv_freq != nullptr)
      << "rope table: rotary_dim " << table.rotary_dim << " for head_dim " << head_dim
      << (table.inv_freq == nullptr ? ", no inv_freq" : "");
  if (t == 0) return;
  TS_CHECK(positions != nullptr) << "rope without positions";
  RopeArgs args;
  args.half = table.rotary_dim / 2;
  std::copy(table.inv_freq, table.inv_freq + args.half, args.inv_freq);
  args.max_positions = table.max_positions;
  args.neox = table.style == RopeStyle::kNeox;
  TS_CUDA_CHECK(launch_rope(q.ptr<float>(), q.stride(0), q.stride(1), q.dim(1), k.ptr<float>(),
                            k.stride(0), k.stride(1), k.dim(1), t, positions, args, errors_dev_,
                            compute_));
}

void CudaBackend::silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) {
  check_rows_on_device(gate, 2, "silu_mul gate");
  check_rows_on_device(up, 2, "silu_mul up");
  check_rows_on_device(out, 2, "silu_mul out");
  TS_CHECK(gate.dim(0) == up.dim(0) && gate.dim(1) == up.dim(1) && out.dim(0) == gate.dim(0) &&
           out.dim(1) == gate.dim(1))
      << "silu_mul " << describe(gate) << " * " << describe(up) << " -> " << describe(out);
  TS_CUDA_CHECK(launch_silu_mul(gate.ptr<const float>(), gate.stride(0), up.ptr<const float>(),
                                up.stride(0), out.ptr<float>(), out.stride(0), gate.dim(0),
                                gate.dim(1), compute_));
}

void CudaBackend::embedding(const int32_t* ids, const TensorView& table, const TensorView& out) {
  TS_CHECK(is_float_dtype(table.dtype)) << "embedding table " << describe(table);
  check_rows(table, table.dtype, 2, "embedding table", DeviceKind::kCuda);
  check_rows_on_device(out, 2, "embedding out");
  TS_CHECK_EQ(table.dim(1), out.dim(1))
      << "embedding " << describe(table) << " -> " << describe(out);
  if (out.dim(0) == 0) return;
  TS_CHECK(ids != nullptr) << "embedding without ids";
  TS_CUDA_CHECK(launch_embedding(ids, table.data, elem_type(table.dtype), table.stride(0),
                                 table.dim(0), out.ptr<float>(), out.stride(0), out.dim(0),
                                 out.dim(1), errors_dev_, compute_));
}

void CudaBackend::gather_rows(const TensorView& src, const int32_t* rows, const TensorView& dst) {
  check_rows_on_device(src, 2, "gather_rows src");
  check_rows_on_device(dst, 2, "gather_rows dst");
  TS_CHECK_EQ(src.dim(1), dst.dim(1)) << "gather_rows " << describe(src) << " -> " << describe(dst);
  if (dst.dim(0) == 0) return;
  TS_CHECK(rows != nullptr) << "gather_rows without row indices";
  TS_CUDA_CHECK(launch_gather_rows(src.ptr<const float>(), src.stride(0), src.dim(0), rows,
                                   dst.ptr<float>(), dst.stride(0), dst.dim(0), dst.dim(1),
                                   errors_dev_, compute_));
}

void CudaBackend::softmax(const TensorView& x) {
  check_rows_on_device(x, 2, "softmax x");
  TS_CUDA_CHECK(launch_softmax(x.ptr<float>(), x.stride(0), x.dim(0), x.dim(1), compute_));
}

void CudaBackend::argmax_rows(const TensorView& logits, const int32_t* rows, int32_t num_rows,
                              int32_t* out) {
  check_rows_on_device(logits, 2, "argmax_rows logits");
  TS_CHECK(logits.dim(1) > 0) << "argmax_rows over empty rows";
  if (num_rows == 0) return;
  TS_CHECK(argmax_host_ != nullptr && num_rows <= limits_.max_seqs)
      << num_rows << " arg-max rows; reserve_steps reserved " << limits_.max_seqs;
  bind_device(options_.device_index);
  const size_t bytes = static_cast<size_t>(num_rows) * sizeof(int32_t);
  std::memcpy(argmax_host_, rows, bytes);
  int32_t* dev_rows = argmax_dev_;
  int32_t* dev_out = argmax_dev_ + limits_.max_seqs;
  TS_CUDA_CHECK(cudaMemcpyAsync(dev_rows, argmax_host_, bytes, cudaMemcpyHostToDevice, compute_));
  TS_CUDA_CHECK(launch_argmax_rows(logits.ptr<const float>(), logits.stride(0), logits.dim(0),
                                   logits.dim(1), dev_rows, num_rows, dev_out, errors_dev_,
                                   compute_));
  int32_t* host_out = argmax_host_ + limits_.max_seqs;
  TS_CUDA_CHECK(cudaMemcpyAsync(host_out, dev_out, bytes, cudaMemcpyDeviceToHost, compute_));
  synchronize();
  std::memcpy(out, host_out, bytes);
}

void CudaBackend::sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                              int32_t* out) {
  check_rows_on_device(logits, 2, "sample_rows logits");
  if (num_rows == 0) return;
  TS_CHECK(sample_host_ != nullptr && num_rows <= limits_.max_seqs &&
           logits.dim(1) == limits_.vocab_size && logits.stride(0) == logits.dim(1) &&
           logits.dim(0) <= limits_.max_seqs)
      << "sample_rows of " << num_rows << " rows of " << describe(logits)
      << " beyond what reserve_steps reserved";
  bind_device(options_.device_index);
  for (int32_t i = 0; i < num_rows; ++i) {
    const SampleRow& r = rows[i];
    TS_CHECK(r.row >= 0 && r.row < logits.dim(0) && r.temperature > 0.0)
        << "sample_rows row " << r.row << " at temperature " << r.temperature;
    DeviceSampleRow& d = sample_host_[i];
    d.row = r.row;
    d.top_k = r.top_k;
    d.inv_t = static_cast<float>(1.0 / r.temperature);
    d.top_p = r.top_p;
    d.min_p = r.min_p;
    d.uniform = r.uniform;
  }
  TS_CUDA_CHECK(cudaMemcpyAsync(sample_dev_, sample_host_,
                                static_cast<size_t>(num_rows) * sizeof(DeviceSampleRow),
                                cudaMemcpyHostToDevice, compute_));
  int32_t* dev_out = argmax_dev_ + limits_.max_seqs;
  TS_CUDA_CHECK(launch_sample_rows(logits.ptr<const float>(), static_cast<int32_t>(logits.dim(0)),
                                   logits.dim(1), sample_dev_, num_rows, sampling_, dev_out,
                                   compute_));
  int32_t* host_out = argmax_host_ + limits_.max_seqs;
  const size_t bytes = static_cast<size_t>(num_rows) * sizeof(int32_t);
  TS_CUDA_CHECK(cudaMemcpyAsync(host_out, dev_out, bytes, cudaMemcpyDeviceToHost, compute_));
  synchronize();
  std::memcpy(out, host_out, bytes);
}

void CudaBackend::apply_penalties(const TensorView& logits, const PenaltyRow* rows,
                                  int32_t num_rows, const PenaltyToken* tokens,
                                  int32_t num_tokens) {
  check_rows_on_device(logits, 2, "apply_penalties logits");
  if (num_rows == 0) return;
  TS_CHECK(penalty_host_ != nullptr && num_rows <= limits_.max_seqs &&
           num_tokens <= limits_.max_penalty_tokens && logits.stride(0) == logits.dim(1))
      << num_rows << " penalty rows of " << num_tokens << " tokens beyond what reserve_steps "
      << "reserved";
  for (int32_t i = 0; i < num_rows; ++i) {
    TS_CHECK(rows[i].row >= 0 && rows[i].row < logits.dim(0) && rows[i].begin >= 0 &&
             rows[i].begin <= rows[i].end && rows[i].end <= num_tokens)
        << "penalty row " << rows[i].row;
  }
  bind_device(options_.device_index);
  const size_t row_bytes = static_cast<size_t>(limits_.max_seqs) * sizeof(PenaltyRow);
  const size_t token_bytes = static_cast<size_t>(num_tokens) * sizeof(PenaltyToken);
  std::memcpy(penalty_host_, rows, static_cast<size_t>(num_rows) * sizeof(PenaltyRow));
  std::memcpy(penalty_host_ + row_bytes, tokens, token_bytes);
  TS_CUDA_CHECK(cudaMemcpyAsync(penalty_dev_, penalty_host_, row_bytes + token_bytes,
                                cudaMemcpyHostToDevice, compute_));
  TS_CUDA_CHECK(launch_apply_penalties(
      logits.ptr<float>(), logits.dim(1), reinterpret_cast<const PenaltyRow*>(penalty_dev_),
      num_rows, reinterpret_cast<const PenaltyToken*>(penalty_dev_ + row_bytes), compute_));
  // The staging buffer is free again once the copy ran; the sampling that follows syncs anyway.
  synchronize();
}

void CudaBackend::write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                           const AttentionMetadata& meta, const KvCacheView& cache) {
  const KvCacheArgs c = cache_args(cache);
  TS_CHECK(layer >= 0 && layer < cache.layout.num_layers) << "layer " << layer;
  for (const TensorView* t : {&k, &v}) {
    check_rows_on_device(*t, 3, "write_kv k/v");
    TS_CHECK(t->dim(0) == meta.num_tokens && t->dim(1) == c.num_kv_heads && t->dim(2) == c.head_dim)
        << "write_kv of " << describe(*t) << " for " << meta.num_tokens << " tokens, "
        << c.num_kv_heads << " KV heads of " << c.head_dim;
  }
  if (meta.num_tokens == 0) return;
  TS_CHECK(meta.slot_mapping != nullptr) << "write_kv without a slot mapping";
  TS_CUDA_CHECK(launch_write_kv(k.ptr<const float>(), k.stride(0), k.stride(1),
                                v.ptr<const float>(), v.stride(0), v.stride(1), meta.num_tokens,
                                meta.slot_mapping, layer, c, errors_dev_, compute_));
}

void CudaBackend::paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                                  const KvCacheView& cache, const AttentionParams& params,
                                  const TensorView& out) {
  const KvCacheArgs c = cache_args(cache);
  TS_CHECK(layer >= 0 && layer < cache.layout.num_layers) << "layer " << layer;
  check_rows_on_device(q, 3, "paged_attention q");
  check_rows_on_device(out, 3, "paged_attention out");
  const int64_t num_tokens = q.dim(0), num_heads = q.dim(1);
  TS_CHECK(q.dim(2) == c.head_dim && num_heads > 0 && num_heads % c.num_kv_heads == 0 &&
           c.head_dim <= 512)
      << "paged_attention q " << describe(q) << " for " << c.num_kv_heads << " KV heads of "
      << c.head_dim << " (at most 512 on CUDA)";
  TS_CHECK(out.dim(0) == num_tokens && out.dim(1) == num_heads && out.dim(2) == c.head_dim)
      << "paged_attention out " << describe(out) << " for q " << describe(q);
  TS_CHECK(params.sliding_window >= 0) << "sliding window " << params.sliding_window;
  TS_CHECK_EQ(meta.num_tokens, num_tokens) << "paged_attention tokens";
  if (num_tokens == 0) return;
  TS_CHECK(meta.num_seqs > 0) << "tokens without sequences";
  // The longest context a query token sees sets the number of splits; a captured step replays
  // with other lengths, so it covers the longest a block table holds.
  const AttentionMetadata& h = staged_host(meta);
  const int64_t capacity = static_cast<int64_t>(meta.max_blocks_per_seq) * c.block_size;
  int64_t longest = 1;
  if (capturing_) {
    longest =
        params.sliding_window > 0 ? std::min<int64_t>(capacity, params.sliding_window) : capacity;
  }
  for (int32_t s = 0; s < h.num_seqs; ++s) {
    const int64_t len = h.seq_lens[s];
    TS_CHECK(len <= capacity) << "sequence " << s << " of " << len << " tokens, room for "
                              << capacity;
    if (h.query_start[s + 1] == h.query_start[s]) continue;
    longest = std::max(
        longest, params.sliding_window > 0 ? std::min<int64_t>(len, params.sliding_window) : len);
  }
  const int32_t splits =
      static_cast<int32_t>((longest + kAttentionSplitKeys - 1) / kAttentionSplitKeys);
  const int64_t per_token =
      attention_scratch_floats(static_cast<int32_t>(num_heads), c.head_dim, splits);
  const int64_t chunk = attn_scratch_floats_ / per_token;
  if (capturing_ && chunk < 1) {
    // A graph must cover the longest context a block table holds; too long for the scratch,
    // the capture fails (the runner stays eager) rather than the process.
    capture_error_ = "a captured step covers contexts of " + std::to_string(longest) +
                     " tokens, more than the attention scratch holds";
    return;
  }
  TS_CHECK(chunk >= 1) << "a context of " << longest << " tokens needs "
                       << per_token * static_cast<int64_t>(sizeof(float))
                       << " bytes of attention scratch per token; the backend has "
                       << options_.attention_scratch_bytes;
  AttentionArgs a;
  a.q = q.ptr<const float>();
  a.q_s0 = q.stride(0);
  a.q_s1 = q.stride(1);
  a.out = out.ptr<float>();
  a.o_s0 = out.stride(0);
  a.o_s1 = out.stride(1);
  a.num_heads = static_cast<int32_t>(num_heads);
  a.scale = params.scale;
  a.window = params.sliding_window;
  a.alibi = params.alibi_slopes;
  a.layer = layer;
  a.query_start = meta.query_start;
  a.seq_lens = meta.seq_lens;
  a.block_tables = meta.block_tables;
  a.max_blocks_per_seq = meta.max_blocks_per_seq;
  a.num_seqs = meta.num_seqs;
  for (int64_t begin = 0; begin < num_tokens; begin += chunk) {
    const int64_t end = std::min(num_tokens, begin + chunk);
    TS_CUDA_CHECK(launch_paged_attention(a, c, static_cast<int32_t>(begin),
                                         static_cast<int32_t>(end), splits, attn_scratch_,
                                         errors_dev_, compute_));
  }
}

}  // namespace

Status CudaBackendOptions::validate() const {
  if (device_index < 0) {
    return invalid_argument("CUDA device index must be >= 0, got " + std::to_string(device_index));
  }
  if (attention_scratch_bytes < (uint64_t{1} << 20)) {
    return invalid_argument("attention scratch must be at least 1 MiB");
  }
  return Status::ok();
}

Result<std::unique_ptr<Backend>> create_cuda_backend(const CudaBackendOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  const int devices = device_count();
  if (devices == 0) {
    return not_found(
        "no CUDA device: the CUDA runtime reports none (check the driver and "
        "CUDA_VISIBLE_DEVICES); use --device cpu");
  }
  if (options.device_index >= devices) {
    return not_found("CUDA device " + std::to_string(options.device_index) + " does not exist (" +
                     std::to_string(devices) + " visible)");
  }
  auto backend = std::make_unique<CudaBackend>(options);
  TS_RETURN_IF_ERROR(backend->init().with_context(device_description(options.device_index)));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace tierserve::cuda

#include "kernels/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/op_checks.h"

namespace tierserve {
namespace {

constexpr int32_t kMaxThreads = 4096;

// Elements per pool chunk for row-wise ops: below this a row range is not worth a thread.
constexpr int64_t kRowChunkElems = 16384;

int64_t rows_per_chunk(int64_t row_elems) {
  return std::max<int64_t>(1, kRowChunkElems / std::max<int64_t>(row_elems, 1));
}

void check_same_rows(const TensorView& a, const TensorView& b, const char* what) {
  TS_CHECK(a.dim(0) == b.dim(0) && a.dim(1) == b.dim(1))
      << what << ": " << describe(a) << " vs " << describe(b);
}

// Rotates the first rotary_dim elements of each head of x[t, heads, head_dim] for token t.
void rope_rows(const TensorView& x, const int32_t* positions, const RopeTable& table, int64_t begin,
               int64_t end) {
  const int64_t half = table.rotary_dim / 2;
  for (int64_t t = begin; t < end; ++t) {
    const int32_t pos = positions[t];
    TS_CHECK(pos >= 0 && pos < table.max_positions)
        << "rope position " << pos << " of token " << t << " outside [0, " << table.max_positions
        << ")";
    const float* cs = table.cos + static_cast<int64_t>(pos) * half;
    const float* sn = table.sin + static_cast<int64_t>(pos) * half;
    for (int64_t h = 0; h < x.dim(1); ++h) {
      float* v = x.ptr<float>() + t * x.stride(0) + h * x.stride(1);
      if (table.style == RopeStyle::kNeox) {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = v[i], x1 = v[i + half];
          v[i] = x0 * cs[i] - x1 * sn[i];
          v[i + half] = x1 * cs[i] + x0 * sn[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = v[2 * i], x1 = v[2 * i + 1];
          v[2 * i] = x0 * cs[i] - x1 * sn[i];
          v[2 * i + 1] = x1 * cs[i] + x0 * sn[i];
        }
      }
    }
  }
}

}  // namespace

Status CpuBackendOptions::validate() const {
  if (num_threads < 0 || num_threads > kMaxThreads) {
    return invalid_argument("CPU kernel threads must be in [0, " + std::to_string(kMaxThreads) +
                            "] (0 = one per core), got " + std::to_string(num_threads));
  }
  if (gemm.gemv_max_m < 0 || gemm.gemv_max_m > kGemvMaxM) {
    return invalid_argument("gemv_max_m must be in [0, " + std::to_string(kGemvMaxM) + "], got " +
                            std::to_string(gemm.gemv_max_m));
  }
  return Status::ok();
}

Result<std::unique_ptr<CpuBackend>> CpuBackend::create(const CpuBackendOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  if (!cpu_supports_isa(options.isa)) {
    return unimplemented("CPU kernel path '" + std::string(cpu_isa_name(options.isa)) +
                         "' needs instructions this CPU lacks; the best it supports is '" +
                         std::string(cpu_isa_name(resolve_cpu_isa(CpuIsa::kAuto))) + "'");
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(options, resolve_cpu_isa(options.isa)));
}

CpuBackend::CpuBackend(const CpuBackendOptions& options, CpuIsa isa) : kernels_(&cpu_kernels(isa)) {
  pool_ = std::make_unique<ThreadPool>(options.num_threads, &topology_);
  gemm_ = std::make_unique<CpuGemm>(pool_.get(), kernels_, options.gemm);
  attention_ = std::make_unique<CpuAttention>(pool_.get(), kernels_);
}

CpuBackend::~CpuBackend() = default;

uint64_t CpuBackend::memory_capacity() const {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

Result<void*> CpuBackend::allocate(size_t bytes) {
  const size_t align = bytes >= 4096 ? 4096 : 64;
  if (bytes > std::numeric_limits<size_t>::max() - align) {
    return resource_exhausted("cannot allocate " + std::to_string(bytes) + " bytes");
  }
  // aligned_alloc wants a multiple of the alignment, and a zero-byte request still gets a
  // unique pointer.
  const size_t size = std::max(align, (bytes + align - 1) / align * align);
  void* p = std::aligned_alloc(align, size);
  if (p == nullptr) {
    return resource_exhausted("out of host memory allocating " + std::to_string(bytes) +
                              " bytes for the CPU device tier");
  }
  return p;
}

void CpuBackend::deallocate(void* ptr) { std::free(ptr); }

void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

void CpuBackend::gemm(const TensorView& x, const TensorView& w, const TensorView* bias,
                      const TensorView& y) {
  gemm_->run(x, w, bias, y);
}

uint64_t CpuBackend::packed_weight_bytes(DType dtype, int64_t n, int64_t k) {
  return gemm_->packed_bytes(dtype, n, k);
}

TensorView CpuBackend::pack_weight(const TensorView& w, void* dst) { return gemm_->pack(w, dst); }

const float* CpuBackend::norm_weight_f32(const TensorView& weight, int64_t d) {
  check_vector(weight, d, "norm weight");
  if (weight.dtype == DType::kF32) return weight.ptr<const float>();
  float* w = norm_weight_.get<float>(static_cast<size_t>(d));
  (weight.dtype == DType::kBF16 ? kernels_->bf16_to_f32 : kernels_->f16_to_f32)(
      weight.ptr<const uint16_t>(), w, d);
  return w;
}

void CpuBackend::rmsnorm(const TensorView& x, const TensorView& weight, float eps,
                         const TensorView& y) {
  check_rows(x, DType::kF32, 2, "rmsnorm x");
  check_rows(y, DType::kF32, 2, "rmsnorm y");
  check_same_rows(x, y, "rmsnorm");
  const int64_t d = x.dim(1);
  struct Work {
    const TensorView *x, *y;
    const float* w;
    float eps;
    const CpuKernels* k;
  } work{&x, &y, norm_weight_f32(weight, d), eps, kernels_};
  if (d == 0) return;
  pool_->parallel_for(x.dim(0), rows_per_chunk(d), [&work](int64_t begin, int64_t end) {
    const int64_t d = work.x->dim(1);
    for (int64_t i = begin; i < end; ++i) {
      work.k->rmsnorm(work.x->ptr<const float>() + i * work.x->stride(0), work.w, work.eps,
                      work.y->ptr<float>() + i * work.y->stride(0), d);
    }
  });
}

void CpuBackend::add_rmsnorm(const TensorView& residual, const TensorView& x,
                             const TensorView& weight, float eps, const TensorView& y) {
  check_rows(residual, DType::kF32, 2, "add_rmsnorm residual");
  check_rows(x, DType::kF32, 2, "add_rmsnorm x");
  check_rows(y, DType::kF32, 2, "add_rmsnorm y");
  check_same_rows(residual, x, "add_rmsnorm");
  check_same_rows(residual, y, "add_rmsnorm");
  const int64_t d = x.dim(1);
  struct Work {
    const TensorView *r, *x, *y;
    const float* w;
    float eps;
    const CpuKernels* k;
  } work{&residual, &x, &y, norm_weight_f32(weight, d), eps, kernels_};
  if (d == 0) return;
  pool_->parallel_for(x.dim(0), rows_per_chunk(d), [&work](int64_t begin, int64_t end) {
    const int64_t d = work.x->dim(1);
    for (int64_t i = begin; i < end; ++i) {
      work.k->add_rmsnorm(work.r->ptr<float>() + i * work.r->stride(0),
                          work.x->ptr<const float>() + i * work.x->stride(0), work.w, work.eps,
                          work.y->ptr<float>() + i * work.y->stride(0), d);
    }
  });
}

void CpuBackend::rope(const TensorView& q, const TensorView& k, const int32_t* positions,
                      const RopeTable& table) {
  check_rows(q, DType::kF32, 3, "rope q");
  check_rows(k, DType::kF32, 3, "rope k");
  const int64_t t = q.dim(0), head_dim = q.dim(2);
  TS_CHECK(k.dim(0) == t && k.dim(2) == head_dim)
      << "rope q " << describe(q) << " vs k " << describe(k);
  TS_CHECK(table.rotary_dim > 0 && table.rotary_dim % 2 == 0 && table.rotary_dim <= head_dim &&
           table.cos != nullptr && table.sin != nullptr)
      << "rope table: rotary_dim " << table.rotary_dim << " for head_dim " << head_dim;
  if (t == 0) return;
  TS_CHECK(positions != nullptr) << "rope without positions";
  struct Work {
    const TensorView *q, *k;
    const int32_t* positions;
    const RopeTable* table;
  } work{&q, &k, positions, &table};
  const int64_t per_token = (q.dim(1) + k.dim(1)) * table.rotary_dim;
  pool_->parallel_for(t, rows_per_chunk(per_token), [&work](int64_t begin, int64_t end) {
    rope_rows(*work.q, work.positions, *work.table, begin, end);
    rope_rows(*work.k, work.positions, *work.table, begin, end);
  });
}

void CpuBackend::silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) {
  check_rows(gate, DType::kF32, 2, "silu_mul gate");
  check_rows(up, DType::kF32, 2, "silu_mul up");
  check_rows(out, DType::kF32, 2, "silu_mul out");
  check_same_rows(gate, up, "silu_mul");
  check_same_rows(gate, out, "silu_mul");
  struct Work {
    const TensorView *g, *u, *o;
    const CpuKernels* k;
  } work{&gate, &up, &out, kernels_};
  const int64_t f = gate.dim(1);
  if (f == 0) return;
  pool_->parallel_for(gate.dim(0), rows_per_chunk(f), [&work](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      work.k->silu_mul(work.g->ptr<const float>() + i * work.g->stride(0),
                       work.u->ptr<const float>() + i * work.u->stride(0),
                       work.o->ptr<float>() + i * work.o->stride(0), work.g->dim(1));
    }
  });
}

void CpuBackend::embedding(const int32_t* ids, const TensorView& table, const TensorView& out) {
  TS_CHECK(is_float_dtype(table.dtype)) << "embedding table " << describe(table);
  check_rows(table, table.dtype, 2, "embedding table");
  check_rows(out, DType::kF32, 2, "embedding out");
  TS_CHECK_EQ(table.dim(1), out.dim(1))
      << "embedding " << describe(table) << " -> " << describe(out);
  const int64_t t = out.dim(0), d = out.dim(1), vocab = table.dim(0);
  if (t == 0) return;
  TS_CHECK(ids != nullptr) << "embedding without ids";
  for (int64_t i = 0; i < t; ++i) {
    TS_CHECK(ids[i] >= 0 && ids[i] < vocab)
        << "token id " << ids[i] << " at " << i << " outside the vocabulary of " << vocab;
  }
  struct Work {
    const int32_t* ids;
    const TensorView *table, *out;
    const CpuKernels* k;
  } work{ids, &table, &out, kernels_};
  if (d == 0) return;
  pool_->parallel_for(t, rows_per_chunk(d), [&work](int64_t begin, int64_t end) {
    const TensorView& tab = *work.table;
    const int64_t d = tab.dim(1);
    const size_t esize = dtype_size(tab.dtype);
    for (int64_t i = begin; i < end; ++i) {
      const char* src = static_cast<const char*>(tab.data) +
                        static_cast<size_t>(work.ids[i] * tab.stride(0)) * esize;
      float* dst = work.out->ptr<float>() + i * work.out->stride(0);
      switch (tab.dtype) {
        case DType::kBF16:
          work.k->bf16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, d);
          break;
        case DType::kF16:
          work.k->f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, d);
          break;
        default:
          std::memcpy(dst, src, static_cast<size_t>(d) * sizeof(float));
          break;
      }
    }
  });
}

void CpuBackend::gather_rows(const TensorView& src, const int32_t* rows, const TensorView& dst) {
  check_rows(src, DType::kF32, 2, "gather_rows src");
  check_rows(dst, DType::kF32, 2, "gather_rows dst");
  TS_CHECK_EQ(src.dim(1), dst.dim(1)) << "gather_rows " << describe(src) << " -> " << describe(dst);
  const int64_t r = dst.dim(0), d = dst.dim(1);
  if (r == 0 || d == 0) return;
  TS_CHECK(rows != nullptr) << "gather_rows without row indices";
  for (int64_t i = 0; i < r; ++i) {
    TS_CHECK(rows[i] >= 0 && rows[i] < src.dim(0))
        << "gather_rows index " << rows[i] << " at " << i << " of " << src.dim(0) << " rows";
  }
  for (int64_t i = 0; i < r; ++i) {
    std::memcpy(dst.ptr<float>() + i * dst.stride(0),
                src.ptr<const float>() + rows[i] * src.stride(0),
                static_cast<size_t>(d) * sizeof(float));
  }
}

void CpuBackend::softmax(const TensorView& x) {
  check_rows(x, DType::kF32, 2, "softmax x");
  const int64_t n = x.dim(1);
  if (n == 0) return;
  struct Work {
    const TensorView* x;
    const CpuKernels* k;
  } work{&x, kernels_};
  pool_->parallel_for(x.dim(0), rows_per_chunk(n), [&work](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      work.k->softmax(work.x->ptr<float>() + i * work.x->stride(0), work.x->dim(1));
    }
  });
}

Status CpuBackend::reserve_steps(const StepLimits& limits) {
  if (limits.vocab_size > 0) sampling_ = std::make_unique<SamplingScratch>(limits.vocab_size);
  return Status::ok();
}

void CpuBackend::sample_rows(const TensorView& logits, const SampleRow* rows, int32_t num_rows,
                             int32_t* out) {
  check_rows(logits, DType::kF32, 2, "sample_rows logits");
  const int64_t n = logits.dim(1);
  if (sampling_ == nullptr || static_cast<int64_t>(sampling_->order.size()) != n) {
    Backend::sample_rows(logits, rows, num_rows, out);  // unreserved: scratch per call
    return;
  }
  for (int32_t i = 0; i < num_rows; ++i) {
    TS_CHECK(rows[i].row >= 0 && rows[i].row < logits.dim(0))
        << "sample_rows row " << rows[i].row << " of " << logits.dim(0);
    out[i] = choose_token(logits.ptr<const float>() + rows[i].row * logits.stride(0),
                          static_cast<int32_t>(n), rows[i], *sampling_);
  }
}

void CpuBackend::write_kv(int32_t layer, const TensorView& k, const TensorView& v,
                          const AttentionMetadata& meta, const KvCacheView& cache) {
  attention_->write_kv(layer, k, v, meta, cache);
}

void CpuBackend::paged_attention(int32_t layer, const TensorView& q, const AttentionMetadata& meta,
                                 const KvCacheView& cache, const AttentionParams& params,
                                 const TensorView& out) {
  attention_->paged_attention(layer, q, meta, cache, params, out);
}

}  // namespace tierserve

// Why decode of plain weights does not use oneDNN. Measured on the development machine (2-core AMD
// EPYC Zen 5 VM, AVX-512 + AVX512_BF16, oneDNN 2.6.3 on OpenMP, a host shared with other jobs, so
// figures vary by about 20% between runs), k = 896 and weights rotated through more memory than the
// 32 MiB L3 so that every call streams them from DRAM:
//
//   read bandwidth, 2 threads of AVX-512 loads                36-38 GB/s (the bound)
//   oneDNN matmul m=1, own OpenMP threads, bf16 [4864, 896]    24-28 GB/s (0.63-0.75)
//                                          bf16 [151936, 896]  27 GB/s    (0.72)
//                                          bf16 [2688, 896]    1.6-18 GB/s (pathological in 2
//                                                                           of 4 runs)
//   oneDNN m=1 split over the pool (split_matmul), bf16 [4864]  26-32 GB/s (0.74-0.88)
//   GEMV kernels below, AVX-512, m=1, bf16 [4864, 896]        33-35 GB/s (0.87-0.96)
//                                     bf16 [151936, 896]      37-40 GB/s (0.98-1.0)
//                                     f32 [4864, 896]         33-35 GB/s (0.88-0.96)
//                               m=4,  bf16 [4864, 896]        26-27 GB/s (0.68-0.75)
//   GEMV kernels, AVX2, m=1, bf16 [4864, 896] / [151936, 896] 28-32 / 32-36 GB/s (0.83-1.0)
//
// oneDNN also multiplies only like types, so x would first be rounded to bf16, where the GEMV
// kernels widen bf16 weights exactly and keep x in f32. So calls with m <= kGemvMaxM use the
// GEMV kernels (cpu_kernels.h), threaded over output rows with the kernel pool; larger m
// (prefill) is compute-bound and goes to oneDNN's brgemm kernels through split_matmul.
//
// Packed weights change that. oneDNN's brgemm kernels read weights in a blocked layout; given a
// plain one they re-block it into the scratchpad on every call. Packed once at load (pack()),
// measured the same way (2 threads, one column slice each, weights rotated beyond L3):
//
//   bf16 [4864, 896]  m=1: packed 39.9 GB/s, plain oneDNN 19.0 GB/s (GEMV kernels: 33-35)
//                     m=4: packed 39.2 GB/s, plain oneDNN 19.3 GB/s (GEMV kernels: 26-27)
//                     m=32: packed 582 GFLOP/s, plain 444 GFLOP/s
//   bf16 [151936, 896] m=1: packed 38.8 GB/s; m=32: packed 600 GFLOP/s, plain 399 GFLOP/s
//
// So resident bf16/f16 weights are packed at load (Backend::pack_weight) and every m of them
// goes to oneDNN, x rounded to the weight dtype; in the engine this took batch-32 decode of the
// qwen2.5-0.5b shape from 283 to 397 tokens/s. The GEMV kernels serve plain weights: f32
// models, batch-invariant mode, and weights that arrive in their checkpoint layout.
//
// Batch-invariant mode (CpuGemmOptions::batch_invariant) sends every m to the GEMV kernels,
// which sum each y[i, r] in an order fixed by k alone (not by m or the other rows of x), add the
// bias the same way, and are never split along k. Rows of x go in groups of kGemvMaxM; for each
// L2-sized block of weight rows every group runs before the next block, so w is read from DRAM
// once per call, as in decode.
#include "kernels/cpu/cpu_gemm.h"

#include <algorithm>

#include "kernels/cpu/parallel.h"
#include "kernels/op_checks.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"

namespace tierserve {
namespace {

// Rows of x up to which a Q4 weight goes through the GEMV kernels rather than dequantized panels.
constexpr int64_t kQuantizedGemvMaxBatch = 32;
// Weight bytes per GEMV chunk of the pool: enough that a chunk outweighs the cost of handing it
// to another thread.
constexpr int64_t kGemvChunkBytes = 64 * 1024;
// Weight bytes per column block when m > kGemvMaxM: the block stays in L2 (1 MiB per core on the
// development machine, 256 KiB-2 MiB on current x86) while every group of rows passes over it.
constexpr int64_t kGemvBlockBytes = 256 * 1024;
// x elements packed per task of the pool.
constexpr int64_t kPackChunkElements = 16384;
// Weight rows converted at a time by the f32 fallback: about this many bytes of f32.
constexpr int64_t kPanelBytes = 2 * 1024 * 1024;
// Column slices of a oneDNN product are multiples of this (its n blocking with AVX-512).
constexpr int64_t kMinSliceColumns = 64;

}  // namespace

CpuGemm::CpuGemm(ThreadPool* pool, const CpuKernels* kernels, const CpuGemmOptions& options)
    : pool_(pool),
      kernels_(kernels),
      options_(options),
      onednn_(pool->num_threads()),
      slice_y_(static_cast<size_t>(pool->num_threads())) {
  TS_CHECK(options_.gemv_max_m >= 0 && options_.gemv_max_m <= kGemvMaxM)
      << "gemv_max_m " << options_.gemv_max_m;
}

CpuGemm::~CpuGemm() = default;

uint64_t CpuGemm::packed_bytes(DType dtype, int64_t n, int64_t k) {
  if (!options_.pack_weights || options_.batch_invariant || dtype == DType::kF32 ||
      !options_.native_low_precision || !onednn_.supports(dtype) || n <= 0 || k <= 0) {
    return 0;
  }
  const int64_t slice = column_slice(n);
  const int64_t slices = (n + slice - 1) / slice, last = n - (slices - 1) * slice;
  const uint64_t full = onednn_.packed_bytes(slice, k, dtype);
  return full * static_cast<uint64_t>(slices - 1) + onednn_.packed_bytes(last, k, dtype);
}

TensorView CpuGemm::pack(const TensorView& w, void* dst) {
  check_rows(w, w.dtype, 2, "packed gemm w");
  TS_CHECK(w.is_contiguous() && !w.packed) << "pack a plain contiguous weight: " << describe(w);
  const int64_t n = w.dim(0), k = w.dim(1);
  TS_CHECK(packed_bytes(w.dtype, n, k) > 0) << "no packed layout for " << describe(w);
  const int64_t slice = column_slice(n);
  const size_t esize = dtype_size(w.dtype);
  char* out = static_cast<char*>(dst);
  for (int64_t j0 = 0; j0 < n; j0 += slice) {
    const int64_t cols = std::min(slice, n - j0);
    onednn_.pack(cols, k, w.dtype, w.ptr<const char>() + static_cast<size_t>(j0 * k) * esize, out);
    out += onednn_.packed_bytes(cols, k, w.dtype);
  }
  TensorView packed = w;
  packed.data = dst;
  packed.packed = true;
  return packed;
}

void CpuGemm::run(const TensorView& x, const TensorView& w, const TensorView* bias,
                  const TensorView& y) {
  check_rows(x, DType::kF32, 2, "gemm x");
  TS_CHECK(is_float_dtype(w.dtype) || w.dtype == DType::kQ4 || w.dtype == DType::kQ8)
      << "gemm weight dtype: " << describe(w);
  check_rows(w, w.dtype, 2, "gemm w");
  check_rows(y, DType::kF32, 2, "gemm y");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  TS_CHECK(w.dim(1) == k && y.dim(0) == m && y.dim(1) == n)
      << "gemm shapes: x " << describe(x) << ", w " << describe(w) << ", y " << describe(y);
  TS_CHECK(m <= 1 || x.stride(0) >= k) << "gemm x rows overlap: " << describe(x);
  TS_CHECK(n <= 1 || w.stride(0) == k) << "gemm w must be contiguous: " << describe(w);
  TS_CHECK(m <= 1 || y.stride(0) == n) << "gemm y must be contiguous: " << describe(y);
  if (m == 0 || n == 0) return;

  const float* x_data = x.ptr<const float>();
  const int64_t ldx = m > 1 ? x.stride(0) : k;
  float* y_data = y.ptr<float>();
  const float* bias_f32 = nullptr;
  if (bias != nullptr) {
    check_vector(*bias, n, "gemm bias");
    if (bias->dtype == DType::kF32) {
      bias_f32 = bias->ptr<const float>();
    } else {
      float* b = bias_.get<float>(static_cast<size_t>(n));
      const auto convert =
          bias->dtype == DType::kBF16 ? kernels_->bf16_to_f32 : kernels_->f16_to_f32;
      convert(bias->ptr<const uint16_t>(), b, n);
      bias_f32 = b;
    }
  }
  if (k == 0) {  // an empty sum: y is the bias, or zero
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) y_data[i * n + j] = bias_f32 != nullptr ? bias_f32[j] : 0.0f;
    }
    return;
  }

  if (w.dtype == DType::kQ4) {
    run_q4(x_data, ldx, w, bias_f32, y_data, m, n, k);
  } else if (w.dtype == DType::kQ8) {
    run_q8(x_data, ldx, w, bias_f32, y_data, m, n, k);
  } else if (w.packed) {
    TS_CHECK(packed_bytes(w.dtype, n, k) > 0)
        << "packed weight " << describe(w) << " given to a gemm that does not pack";
    run_packed(x_data, ldx, w.data, w.dtype, bias_f32, y_data, m, n, k);
  } else if (options_.batch_invariant || m <= options_.gemv_max_m) {
    run_gemv(x_data, ldx, w.data, w.dtype, bias_f32, y_data, m, n, k);
  } else if (w.dtype == DType::kF32 ||
             (options_.native_low_precision && onednn_.supports(w.dtype))) {
    run_onednn(x_data, ldx, w.data, w.dtype, bias_f32, y_data, m, n, k);
  } else if (options_.gemv_max_m > 0 && m <= kQuantizedGemvMaxBatch) {
    // A weight oneDNN cannot multiply natively (f16 without AVX512-FP16 support) at decode
    // batches: read once by the GEMV kernels rather than converted to f32 panels, which write
    // and read it again in f32 (as for Q4 weights).
    run_gemv(x_data, ldx, w.data, w.dtype, bias_f32, y_data, m, n, k);
  } else {
    run_f32_panels(x_data, ldx, w.data, w.dtype, bias_f32, y_data, m, n, k);
  }
}

// Every y[i, r] is computed by one kernel call on its own (group of rows, block of columns) and
// the kernels' per-row results do not depend on the group (cpu_kernels.h), so the grouping, the
// blocking and the thread split change no bit of y.
void CpuGemm::run_gemv(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                       float* y, int64_t m, int64_t n, int64_t k) {
  const bool bf16 = dtype == DType::kBF16;
  struct Work {
    const float* x;
    int64_t ldx;
    PackGemvXFn pack;
    float* packed;
    int64_t xs, n, k;
    GemvFn fn;
    const void* w;
    const float* bias;
    float* y;
  } work{x,
         ldx,
         bf16 ? kernels_->pack_gemv_x_bf16 : kernels_->pack_gemv_x,
         packed_x_.get<float>(static_cast<size_t>(m * gemv_x_stride(k))),
         gemv_x_stride(k),
         n,
         k,
         dtype == DType::kF32 ? kernels_->gemv_f32
         : bf16               ? kernels_->gemv_bf16
                              : kernels_->gemv_f16,
         w,
         bias,
         y};
  // Packing is per row (a copy or a permutation, no arithmetic), so x is packed once per call.
  pool_->parallel_for(
      m, std::max<int64_t>(kGemvMaxM, kPackChunkElements / k), [&work](int64_t begin, int64_t end) {
        work.pack(work.x + begin * work.ldx, work.ldx, static_cast<int32_t>(end - begin), work.k,
                  work.packed + begin * work.xs);
      });
  for_gemv_blocks(
      m, n, k * static_cast<int64_t>(dtype_size(dtype)),
      [](const void* ctx, int64_t i, int32_t rows, int64_t r_begin, int64_t r_end) {
        const Work& wk = *static_cast<const Work*>(ctx);
        const GemvArgs args{wk.packed + i * wk.xs, rows, wk.k, wk.w, wk.bias,
                            wk.y + i * wk.n,       wk.n};
        wk.fn(args, r_begin, r_end);
      },
      &work);
}

void CpuGemm::for_gemv_blocks(int64_t m, int64_t n, int64_t row_bytes,
                              void (*gemv)(const void* ctx, int64_t i, int32_t rows,
                                           int64_t r_begin, int64_t r_end),
                              const void* ctx) {
  int64_t block_rows = 0;
  if (m <= kGemvMaxM) {  // decode: blocks are only the pool's grain
    block_rows = std::max<int64_t>(1, kGemvChunkBytes / row_bytes);
  } else {  // at least one block per thread where n allows
    const int64_t threads = pool_->num_threads();
    block_rows =
        std::max<int64_t>(1, std::min(kGemvBlockBytes / row_bytes, (n + threads - 1) / threads));
  }
  struct Schedule {
    int64_t m, n, block_rows;
    decltype(gemv) fn;
    const void* ctx;
  } schedule{m, n, block_rows, gemv, ctx};
  pool_->parallel_for(
      (n + block_rows - 1) / block_rows, 1, [&schedule](int64_t block_begin, int64_t block_end) {
        for (int64_t block = block_begin; block < block_end; ++block) {
          const int64_t r_begin = block * schedule.block_rows;
          const int64_t r_end = std::min(schedule.n, r_begin + schedule.block_rows);
          for (int64_t i = 0; i < schedule.m; i += kGemvMaxM) {
            schedule.fn(schedule.ctx, i,
                        static_cast<int32_t>(std::min<int64_t>(kGemvMaxM, schedule.m - i)), r_begin,
                        r_end);
          }
        }
      });
}

void CpuGemm::run_onednn(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                         float* y, int64_t m, int64_t n, int64_t k) {
  if (dtype == DType::kF32) {
    split_matmul(x, ldx, w, false, dtype, bias, y, n, m, n, k);
    return;
  }
  split_matmul(convert_x(x, ldx, dtype, m, k), k, w, false, dtype, bias, y, n, m, n, k);
}

void CpuGemm::run_packed(const float* x, int64_t ldx, const void* w, DType dtype, const float* bias,
                         float* y, int64_t m, int64_t n, int64_t k) {
  split_matmul(convert_x(x, ldx, dtype, m, k), k, w, true, dtype, bias, y, n, m, n, k);
}

// oneDNN multiplies only like types: x goes to the weight's dtype (what a bf16 model's
// activations would be anyway); accumulation and y stay f32.
const void* CpuGemm::convert_x(const float* x, int64_t ldx, DType dtype, int64_t m, int64_t k) {
  struct Work {
    const float* x;
    int64_t ldx, k;
    uint16_t* low;
    void (*convert)(const float*, uint16_t*, int64_t);
  } work{x, ldx, k, low_x_.get<uint16_t>(static_cast<size_t>(m * k)),
         dtype == DType::kBF16 ? kernels_->f32_to_bf16 : kernels_->f32_to_f16};
  pool_->parallel_for(m, std::max<int64_t>(1, 16384 / k), [&work](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      work.convert(work.x + i * work.ldx, work.low + i * work.k, work.k);
    }
  });
  return work.low;
}

// The fallback for a low-precision weight dtype oneDNN cannot multiply on this CPU (f16 without
// AVX-512 FP16; bf16 on AVX2-only CPUs): panels of weight rows are widened to f32 and multiplied
// by oneDNN's f32 kernels, writing the matching columns of y.
void CpuGemm::run_f32_panels(const float* x, int64_t ldx, const void* w, DType dtype,
                             const float* bias, float* y, int64_t m, int64_t n, int64_t k) {
  const int64_t rows_per_panel =
      std::min(n, std::max<int64_t>(16, kPanelBytes / (4 * k) / 16 * 16));
  struct Work {
    const uint16_t* w;
    float* panel;
    int64_t k;
    void (*convert)(const uint16_t*, float*, int64_t);
  } work{static_cast<const uint16_t*>(w),
         panel_.get<float>(static_cast<size_t>(rows_per_panel * k)), k,
         dtype == DType::kBF16 ? kernels_->bf16_to_f32 : kernels_->f16_to_f32};
  for (int64_t r0 = 0; r0 < n; r0 += rows_per_panel) {
    const int64_t rows = std::min(rows_per_panel, n - r0);
    const uint16_t* src = work.w + r0 * k;
    // Converted rows are written in row-chunks by the pool.
    struct Panel {
      Work* work;
      const uint16_t* src;
    } panel{&work, src};
    pool_->parallel_for(rows, std::max<int64_t>(1, 16384 / k), [&panel](int64_t b, int64_t e) {
      const int64_t kk = panel.work->k;
      panel.work->convert(panel.src + b * kk, panel.work->panel + b * kk, (e - b) * kk);
    });
    split_matmul(x, ldx, work.panel, false, DType::kF32, bias != nullptr ? bias + r0 : nullptr,
                 y + r0, n, m, rows, k);
  }
}

void CpuGemm::run_q4(const float* x, int64_t ldx, const TensorView& w, const float* bias, float* y,
                     int64_t m, int64_t n, int64_t k) {
  const Q4Layout l = Q4Layout::of(w);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  const int64_t groups = l.groups();
  const bool gemv = quantized_gemv(m);
  // x in the weight's column order (a gather for act order) and, for the GEMV kernels, its group
  // sums, once per call.
  struct Prep {
    const float* x;
    int64_t ldx, k, groups, group_size;
    const int32_t* perm;
    float* gathered;
    float* xsum;
  } prep{x,
         ldx,
         k,
         groups,
         l.group_size,
         l.act_order ? reinterpret_cast<const int32_t*>(base + l.perm_offset) : nullptr,
         l.act_order ? q4_x_.get<float>(static_cast<size_t>(m * k)) : nullptr,
         gemv ? q4_xsum_.get<float>(static_cast<size_t>(m * groups)) : nullptr};
  if (prep.perm != nullptr || prep.xsum != nullptr) {
    pool_->parallel_for(m, std::max<int64_t>(1, 16384 / k), [&prep](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* src = prep.x + i * prep.ldx;
        const float* row = src;
        if (prep.perm != nullptr) {
          float* dst = prep.gathered + i * prep.k;
          for (int64_t c = 0; c < prep.k; ++c) dst[c] = src[prep.perm[c]];
          row = dst;
        }
        for (int64_t g = 0; prep.xsum != nullptr && g < prep.groups; ++g) {
          float sum = 0.0f;
          for (int64_t c = g * prep.group_size; c < (g + 1) * prep.group_size; ++c) sum += row[c];
          prep.xsum[i * prep.groups + g] = sum;
        }
      }
    });
  }
  const float* xq = l.act_order ? prep.gathered : x;
  const int64_t ldxq = l.act_order ? k : ldx;
  Q4GemvArgs args;
  args.x = xq;
  args.ldx = ldxq;
  args.xsum = prep.xsum;
  args.k = k;
  args.group_size = l.group_size;
  args.nibbles = base;
  if (l.k_quant) {
    args.sub_scales = base + l.scales_offset;
    args.supers = reinterpret_cast<const uint16_t*>(base + l.supers_offset);
  } else {
    args.scales = reinterpret_cast<const uint16_t*>(base + l.scales_offset);
  }
  args.zeros = base + l.zeros_offset;
  args.bias = bias;
  args.y = y;
  args.ldy = n;

  if (gemv) {
    struct Work {
      Q4GemvArgs args;
      Q4GemvFn fn;
      int64_t groups;
    } work{args, kernels_->gemv_q4, groups};
    for_gemv_blocks(
        m, n, k / 2,
        [](const void* ctx, int64_t i, int32_t rows, int64_t r_begin, int64_t r_end) {
          const Work& wk = *static_cast<const Work*>(ctx);
          Q4GemvArgs a = wk.args;
          a.x += i * a.ldx;
          a.xsum += i * wk.groups;
          a.y += i * a.ldy;
          a.m = rows;
          wk.fn(a, r_begin, r_end);
        },
        &work);
    return;
  }

  // Prefill: panels of rows dequantized to f32 (stored column order), multiplied by oneDNN.
  struct Deq {
    const void* blob;
    const Q4Layout* layout;
  } deq{w.data, &l};
  run_dequantized_panels(
      xq, ldxq,
      [](const void* ctx, int64_t r0, int64_t rows, float* out) {
        const Deq& d = *static_cast<const Deq*>(ctx);
        dequantize_q4_rows(d.blob, *d.layout, r0, rows, out);
      },
      &deq, bias, y, m, n, k);
}

bool CpuGemm::quantized_gemv(int64_t m) const {
  // Up to kQuantizedGemvMaxBatch rows (batched decode) the GEMV kernels take groups of kGemvMaxM
  // rows over L2-sized blocks of w, reading w once; dequantized panels would write and read it in
  // f32 (measured 9x slower at m = 8). gemv_max_m = 0 forces the panels (tests).
  return options_.batch_invariant ||
         (options_.gemv_max_m > 0 &&
          m <= std::max<int64_t>(options_.gemv_max_m, kQuantizedGemvMaxBatch));
}

void CpuGemm::run_dequantized_panels(const float* x, int64_t ldx,
                                     void (*dequantize)(const void* ctx, int64_t r0, int64_t rows,
                                                        float* out),
                                     const void* ctx, const float* bias, float* y, int64_t m,
                                     int64_t n, int64_t k) {
  const int64_t rows_per_panel =
      std::min(n, std::max<int64_t>(16, kPanelBytes / (4 * k) / 16 * 16));
  float* panel = panel_.get<float>(static_cast<size_t>(rows_per_panel * k));
  for (int64_t r0 = 0; r0 < n; r0 += rows_per_panel) {
    const int64_t rows = std::min(rows_per_panel, n - r0);
    struct Work {
      decltype(dequantize) fn;
      const void* ctx;
      float* panel;
      int64_t r0, k;
    } work{dequantize, ctx, panel, r0, k};
    pool_->parallel_for(rows, 1, [&work](int64_t b, int64_t e) {
      work.fn(work.ctx, work.r0 + b, e - b, work.panel + b * work.k);
    });
    split_matmul(x, ldx, panel, false, DType::kF32, bias != nullptr ? bias + r0 : nullptr, y + r0,
                 n, m, rows, k);
  }
}

void CpuGemm::run_q8(const float* x, int64_t ldx, const TensorView& w, const float* bias, float* y,
                     int64_t m, int64_t n, int64_t k) {
  const Q8Layout l = Q8Layout::of(w);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  if (quantized_gemv(m)) {
    Q8GemvArgs args;
    args.x = x;
    args.ldx = ldx;
    args.k = k;
    args.group_size = l.group_size;
    args.values = reinterpret_cast<const int8_t*>(base);
    args.scales = reinterpret_cast<const float*>(base + l.scales_offset);
    args.mins = l.with_mins ? reinterpret_cast<const float*>(base + l.mins_offset) : nullptr;
    args.bias = bias;
    args.y = y;
    args.ldy = n;
    struct Work {
      Q8GemvArgs args;
      Q8GemvFn fn;
    } work{args, kernels_->gemv_q8};
    for_gemv_blocks(
        m, n, k,
        [](const void* ctx, int64_t i, int32_t rows, int64_t r_begin, int64_t r_end) {
          const Work& wk = *static_cast<const Work*>(ctx);
          Q8GemvArgs a = wk.args;
          a.x += i * a.ldx;
          a.y += i * a.ldy;
          a.m = rows;
          wk.fn(a, r_begin, r_end);
        },
        &work);
    return;
  }
  struct Deq {
    const void* blob;
    const Q8Layout* layout;
  } deq{w.data, &l};
  run_dequantized_panels(
      x, ldx,
      [](const void* ctx, int64_t r0, int64_t rows, float* out) {
        const Deq& d = *static_cast<const Deq*>(ctx);
        dequantize_q8_rows(d.blob, *d.layout, r0, rows, out);
      },
      &deq, bias, y, m, n, k);
}

int64_t CpuGemm::column_slice(int64_t n) const {
  const int64_t threads = pool_->num_threads();
  if (threads == 1 || n < kMinSliceColumns * threads) return n;
  const int64_t slice = (n + threads - 1) / threads;
  return (slice + kMinSliceColumns - 1) / kMinSliceColumns * kMinSliceColumns;
}

// Slices along n (multiples of 64 columns, oneDNN's n blocking with AVX-512) when n is wide
// enough for every thread, else along m. Slices have at most two shapes (the last one may be
// shorter), so the steady state reuses two cached primitives per product shape. Packed weights
// were packed per column slice of the same split (pack()).
//
// A column slice of y is not dense (its row stride is n, not its width), and oneDNN 2.6's
// brgemm matmul takes only dense outputs: given a strided one it falls back to its older
// gemm:jit kernel, measured 1.4-8x slower at m = 32 on the qwen2.5-0.5b shapes. So when m > 1
// each column slice is written densely into its slot's scratch and copied into y (m x width
// floats, small next to the m x width x k product).
void CpuGemm::split_matmul(const void* x, int64_t ldx, const void* w, bool packed, DType dtype,
                           const float* bias, float* y, int64_t ldy, int64_t m, int64_t n,
                           int64_t k) {
  const int64_t threads = pool_->num_threads();
  const int64_t n_slice = column_slice(n);
  const int64_t m_slice = n_slice < n ? m : (m + threads - 1) / threads;
  const int64_t n_slices = (n + n_slice - 1) / n_slice, m_slices = (m + m_slice - 1) / m_slice;
  const int64_t last_n = n - (n_slices - 1) * n_slice;
  // Dense slices when a column slice is narrower than y and has more than one row.
  const bool staged = n_slice < ldy && m > 1 && m_slice == m;
  const bool has_bias = bias != nullptr;
  // A single row's stride is immaterial: it is given as the slice width, so that the output is
  // dense for oneDNN without staging.
  const bool dense = staged || m == 1;
  const MatmulShape full{m_slice, n_slice, k, ldx, dense ? n_slice : ldy, dtype, has_bias, packed};
  MatmulShape last = full;
  last.m = m - (m_slices - 1) * m_slice;
  last.n = last_n;
  if (dense) last.ldy = last_n;
  if (staged) {
    for (ScratchBuffer& b : slice_y_) b.get<float>(static_cast<size_t>(m_slice * n_slice));
  }
  struct Work {
    OnednnMatmul* onednn;
    const OnednnMatmul::Entry *full, *last;
    const char *x, *w;
    size_t esize;
    const float* bias;
    float* y;
    ScratchBuffer* slice_y;  // per slot, when staged; else null
    size_t w_slice_bytes;    // bytes between the weights of consecutive column slices
    int64_t ldx, ldy, k, m_slice, n_slice, n_slices, items, last_n, m;
  } work{&onednn_,
         onednn_.prepare(full),
         nullptr,
         static_cast<const char*>(x),
         static_cast<const char*>(w),
         dtype_size(dtype),
         bias,
         y,
         staged ? slice_y_.data() : nullptr,
         0,
         ldx,
         ldy,
         k,
         m_slice,
         n_slice,
         n_slices,
         n_slices * m_slices,
         last_n,
         m};
  // Prepared second: an entry stays cached across the next prepare().
  work.last = last == full ? work.full : onednn_.prepare(last);
  // Packed slices lie one after another (pack()); plain ones are rows of w.
  work.w_slice_bytes = packed ? OnednnMatmul::weights_bytes(work.full)
                              : static_cast<size_t>(n_slice * k) * work.esize;
  parallel_slots(*pool_, work.items, 1, [&work](int slot, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i0 = item / work.n_slices * work.m_slice;
      const int64_t j0 = item % work.n_slices * work.n_slice;
      const bool is_last = item == work.items - 1;
      float* out = work.y + i0 * work.ldy + j0;
      if (work.slice_y != nullptr) {
        // The size was reserved above: get() does not reallocate here.
        out = work.slice_y[slot].get<float>(static_cast<size_t>(work.m_slice * work.n_slice));
      }
      work.onednn->execute(is_last ? work.last : work.full, slot,
                           work.x + static_cast<size_t>(i0 * work.ldx) * work.esize,
                           work.w + static_cast<size_t>(j0 / work.n_slice) * work.w_slice_bytes,
                           work.bias != nullptr ? work.bias + j0 : nullptr, out);
      if (work.slice_y != nullptr) {
        const int64_t width = is_last ? work.last_n : work.n_slice;
        for (int64_t i = 0; i < work.m; ++i) {
          std::copy_n(out + i * width, width, work.y + i * work.ldy + j0);
        }
      }
    }
  });
}

}  // namespace tierserve

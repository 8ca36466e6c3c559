// Steady-state ops allocate nothing (DESIGN.md §7): after a first call of each shape has sized
// the scratch buffers, repeating the calls performs no operator new. This binary replaces the
// global operator new to count calls, so it holds only this test.
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/test_util.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

// GCC flags malloc/free inside replaced global operators as mismatched once they are inlined
// into library code; pairing them is exactly what a replacement must do.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace tierserve {
namespace {

using testing::Random;

TEST(CpuNoAllocTest, RepeatedOpsDoNotAllocate) {
  for (CpuIsa isa : testing::all_isas()) {
    if (!cpu_supports_isa(isa)) continue;
    SCOPED_TRACE(std::string(cpu_isa_name(isa)));
    auto backend = testing::make_cpu_backend(isa, 2);
    ASSERT_NE(backend, nullptr);
    Random rng(51);
    const int64_t t = 3, d = 64, heads = 4, kv_heads = 2, hd = 16, n = 300;
    std::vector<float> x = rng.values(t * d), y(t * n), res = rng.values(t * d), out(t * d);
    const std::vector<uint16_t> w = testing::to_half(rng.values(n * d), DType::kBF16);
    const std::vector<uint16_t> norm_w = testing::to_half(rng.values(d), DType::kBF16);
    std::vector<float> q = rng.values(t * heads * hd), k = rng.values(t * kv_heads * hd),
                       v = rng.values(t * kv_heads * hd), attn(t * heads * hd);
    std::vector<float> cos_t = rng.values(16 * hd / 2), sin_t = rng.values(16 * hd / 2);
    const RopeTable table{cos_t.data(), sin_t.data(), static_cast<int32_t>(hd), 16,
                          RopeStyle::kNeox};
    const std::vector<int32_t> positions = {4, 5, 6}, ids = {1, 0, 3};
    KvCacheView cache;
    cache.layout =
        KvBlockLayout{1, 4, static_cast<int32_t>(kv_heads), static_cast<int32_t>(hd), DType::kBF16};
    std::vector<uint16_t> kv_pool(static_cast<size_t>(4 * cache.layout.block_elems()));
    cache.base = kv_pool.data();
    cache.num_blocks = 4;
    const std::vector<int32_t> query_start = {0, 3}, seq_lens = {7}, tables = {2, 0};
    const std::vector<int32_t> slots = {2 * 4 + 0, 2 * 4 + 1, 2 * 4 + 2};  // positions 4..6
    AttentionMetadata meta{1, 3,           query_start.data(), seq_lens.data(), tables.data(),
                           2, slots.data()};

    const TensorView xv = TensorView::contiguous(x.data(), DType::kF32, {t, d});
    const TensorView wv =
        TensorView::contiguous(const_cast<uint16_t*>(w.data()), DType::kBF16, {n, d});
    const TensorView nw =
        TensorView::contiguous(const_cast<uint16_t*>(norm_w.data()), DType::kBF16, {d});
    const auto step = [&] {
      backend->gemm(xv, wv, nullptr, TensorView::contiguous(y.data(), DType::kF32, {t, n}));
      backend->gemm(xv.rows(0, 1), wv, nullptr,
                    TensorView::contiguous(y.data(), DType::kF32, {1, n}));
      backend->rmsnorm(xv, nw, 1e-6f, TensorView::contiguous(out.data(), DType::kF32, {t, d}));
      backend->add_rmsnorm(TensorView::contiguous(res.data(), DType::kF32, {t, d}), xv, nw, 1e-6f,
                           TensorView::contiguous(out.data(), DType::kF32, {t, d}));
      backend->silu_mul(xv, xv, TensorView::contiguous(out.data(), DType::kF32, {t, d}));
      backend->softmax(TensorView::contiguous(out.data(), DType::kF32, {t, d}));
      backend->embedding(ids.data(), nw.reshape({4, 16}),
                         TensorView::contiguous(out.data(), DType::kF32, {t, 16}));
      backend->rope(TensorView::contiguous(q.data(), DType::kF32, {t, heads, hd}),
                    TensorView::contiguous(k.data(), DType::kF32, {t, kv_heads, hd}),
                    positions.data(), table);
      backend->write_kv(0, TensorView::contiguous(k.data(), DType::kF32, {t, kv_heads, hd}),
                        TensorView::contiguous(v.data(), DType::kF32, {t, kv_heads, hd}), meta,
                        cache);
      AttentionParams params;
      params.scale = 0.25f;
      backend->paged_attention(0, TensorView::contiguous(q.data(), DType::kF32, {t, heads, hd}),
                               meta, cache, params,
                               TensorView::contiguous(attn.data(), DType::kF32, {t, heads, hd}));
    };
    step();  // sizes the scratch buffers and creates the oneDNN primitives
    const int64_t before = g_allocations.load();
    for (int i = 0; i < 3; ++i) step();
    const int64_t allocations = g_allocations.load() - before;
    // Includes the oneDNN route (the t = 3 gemm): operator new is global, so allocations inside
    // libdnnl would be counted too.
    EXPECT_EQ(allocations, 0) << "allocations in steady state";
  }
}

TEST(CpuNoAllocTest, DecodeStepsDoNotAllocateAtAll) {
  auto backend = testing::make_cpu_backend(CpuIsa::kAuto, 2);
  ASSERT_NE(backend, nullptr);
  Random rng(52);
  const int64_t d = 96, n = 500;
  std::vector<float> x = rng.values(d), y(n), out(d);
  const std::vector<uint16_t> w = testing::to_half(rng.values(n * d), DType::kBF16);
  const TensorView xv = TensorView::contiguous(x.data(), DType::kF32, {1, d});
  const TensorView wv =
      TensorView::contiguous(const_cast<uint16_t*>(w.data()), DType::kBF16, {n, d});
  const auto step = [&] {
    backend->gemm(xv, wv, nullptr, TensorView::contiguous(y.data(), DType::kF32, {1, n}));
    backend->rmsnorm(xv, TensorView::contiguous(x.data(), DType::kF32, {d}), 1e-6f,
                     TensorView::contiguous(out.data(), DType::kF32, {1, d}));
  };
  step();
  const int64_t before = g_allocations.load();
  for (int i = 0; i < 10; ++i) step();
  EXPECT_EQ(g_allocations.load() - before, 0);
}

}  // namespace
}  // namespace tierserve

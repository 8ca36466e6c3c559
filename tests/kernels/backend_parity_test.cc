// Table-driven parity of every Backend op (ggml's test-backend-ops, DESIGN.md §8): each case
// runs on a candidate backend and on the reference (the CPU backend's scalar path) with the same
// random inputs, fresh per run and never zero, and with outputs poisoned (NaN) before the op, so
// an element the candidate leaves unwritten fails. Candidates: the CPU backend's fastest path
// (always), and the CUDA backend, plain and --deterministic, where a device is present (skipped
// otherwise).
//
// Error bounds (max |candidate - reference| / max |reference|), per what the candidate rounds:
// - f32 element-wise and row ops (norms, rope, silu, softmax, embedding, gather, write_kv): 1e-5,
//   2e-5 where CUDA's expf/sinf/cosf differ from glibc by an ulp;
// - gemm: f32 weights 1e-5; bf16 weights 1e-2 and f16 weights 2e-3 (CUDA rounds the activations
//   to the weight's type, as bf16 models do on GPUs);
// - attention: 2e-5 (the same cached values, f32 accumulation in another order).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend_registry.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"
#include "tests/kernels/test_util.h"

#if defined(TIERSERVE_CUDA)
#include "kernels/cuda/cuda_device.h"
#endif

namespace tierserve {
namespace {

using testing::Random;

// One backend under test, with the memory it was given for a case.
class Side {
 public:
  explicit Side(Backend* backend) : b_(backend) {}
  ~Side() {
    for (void* p : allocs_) b_->deallocate(p);
  }
  Side(const Side&) = delete;
  Side& operator=(const Side&) = delete;

  Backend* backend() const { return b_; }

  // A contiguous tensor of `shape` holding `values` converted to `dtype`.
  TensorView upload(const std::vector<float>& values, DType dtype,
                    std::initializer_list<int64_t> shape) {
    std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
    convert(values.data(), DType::kF32, bytes.data(), dtype, values.size());
    return upload_bytes(bytes.data(), bytes.size(), dtype, shape);
  }
  // A tensor of NaNs (0xff bytes).
  TensorView poisoned(DType dtype, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint8_t> bytes(static_cast<size_t>(n) * dtype_size(dtype), 0xff);
    return upload_bytes(bytes.data(), bytes.size(), dtype, shape);
  }
  void* raw(size_t bytes) {
    auto p = b_->allocate(std::max<size_t>(bytes, 64));
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    allocs_.push_back(p.value());
    return p.value();
  }
  // `t`'s elements as f32 (any float dtype, contiguous).
  std::vector<float> download(const TensorView& t) {
    b_->synchronize();
    std::vector<uint8_t> bytes(t.nbytes());
    b_->copy(bytes.data(), t.data, bytes.size());
    std::vector<float> out(static_cast<size_t>(t.numel()));
    convert(bytes.data(), t.dtype, out.data(), DType::kF32, out.size());
    return out;
  }

 private:
  TensorView upload_bytes(const void* data, size_t bytes, DType dtype,
                          std::initializer_list<int64_t> shape) {
    void* p = raw(bytes);
    b_->copy(p, data, bytes);
    return TensorView::contiguous(p, dtype, shape, b_->device());
  }

  Backend* b_;
  std::vector<void*> allocs_;
};

// max |a - b| / max |b|; infinite when a holds a NaN (an unwritten element).
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

std::string candidate_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

class BackendParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    RecordProperty("seed", std::to_string(seed_));
    reference_ = testing::make_cpu_backend(CpuIsa::kScalar, 2);
    ASSERT_NE(reference_, nullptr);
    BackendOptions options;
    options.num_threads = 2;
    const bool cuda = GetParam() != "cpu_fastest";
    options.device = cuda ? "cuda" : "cpu";
    options.deterministic = GetParam() == "cuda_deterministic";
#if defined(TIERSERVE_CUDA)
    if (cuda && cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
#else
    if (cuda) GTEST_SKIP() << "built without CUDA";
#endif
    auto created = create_backend(options);
    ASSERT_TRUE(created.is_ok()) << created.status().to_string();
    candidate_ = std::move(created).value();
    // Vocabulary and penalty tokens: the sampling tests'.
    StepLimits limits{4096, 64, 512, 3000, 4096};
    ASSERT_TRUE(reference_->reserve_steps(limits).is_ok());
    ASSERT_TRUE(candidate_->reserve_steps(limits).is_ok());
  }

  // Runs `op` on both backends with the inputs `make` builds on each, and compares the outputs
  // `op` returns. `make` must draw its random values from the Random it is given (the same
  // seed on both sides).
  void expect_parity(const std::string& what, double bound,
                     const std::function<std::vector<TensorView>(Side&, Random&)>& op) {
    Side ref(reference_.get()), cand(candidate_.get());
    Random r1(seed_), r2(seed_);
    const std::vector<TensorView> want = op(ref, r1);
    const std::vector<TensorView> got = op(cand, r2);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const double err = relative_error(cand.download(got[i]), ref.download(want[i]));
      EXPECT_LE(err, bound) << what << ", output " << i << " (seed " << seed_ << ")";
    }
  }

  uint32_t seed_ = 0;
  std::unique_ptr<CpuBackend> reference_;
  std::unique_ptr<Backend> candidate_;
};

TEST_P(BackendParityTest, Gemm) {
  struct Case {
    int64_t m, k, n;
    DType w;
    bool bias;
    int64_t x_pad;  // extra floats per x row (a strided view)
    double bound;
  };
  const Case cases[] = {
      {1, 64, 96, DType::kF32, false, 0, 1e-5},
      {7, 128, 33, DType::kF32, true, 5, 1e-5},
      {1, 256, 512, DType::kBF16, false, 0, 1e-2},
      {64, 96, 130, DType::kBF16, true, 3, 1e-2},
      {5, 200, 64, DType::kF16, true, 0, 2e-3},
      {130, 64, 48, DType::kF16, false, 0, 2e-3},
      // Past the batch-invariant GEMM's fixed 16-row and 8192-column tiles.
      {37, 64, 9000, DType::kBF16, true, 2, 1e-2},
  };
  for (const Case& c : cases) {
    expect_parity(
        "gemm " + std::to_string(c.m) + "x" + std::to_string(c.k) + "x" + std::to_string(c.n) +
            " " + std::string(dtype_name(c.w)),
        c.bound, [&](Side& s, Random& r) {
          const int64_t ldx = c.k + c.x_pad;
          TensorView x =
              s.upload(r.values(static_cast<size_t>(c.m * ldx)), DType::kF32, {c.m, ldx});
          x.shape[1] = c.k;
          TensorView w = s.upload(r.values(static_cast<size_t>(c.n * c.k), 0.2f), c.w, {c.n, c.k});
          TensorView b = s.upload(r.values(static_cast<size_t>(c.n)), c.w, {c.n});
          TensorView y = s.poisoned(DType::kF32, {c.m, c.n});
          s.backend()->gemm(x, w, c.bias ? &b : nullptr, y);
          return std::vector<TensorView>{y};
        });
  }
}

// Q4 (W4A16) weights: the fused GEMV sizes, prefill (f16 tiles through cuBLAS on CUDA), an
// act-order weight and the k-quant form (GGUF Q4_K). Same random blob on both sides (the
// generator's draws depend only on the case), bound 2e-3 of max |y| for the f16-rounded prefill
// route.
TEST_P(BackendParityTest, Q4Gemm) {
  struct Case {
    int64_t m, n, k;
    int32_t group_size;
    bool act_order, bias, k_quant;
  };
  const Case cases[] = {
      {1, 256, 512, 128, false, false, false}, {8, 96, 256, 32, true, true, false},
      {3, 64, 4096, 128, false, true, false},  {70, 128, 384, 64, true, false, false},
      {2, 96, 1024, 32, false, true, true},    {40, 64, 512, 32, false, false, true},
  };
  for (const Case& c : cases) {
    expect_parity("q4 gemm " + std::to_string(c.m) + "x" + std::to_string(c.k) + "x" +
                      std::to_string(c.n) + (c.act_order ? " act-order" : "") +
                      (c.k_quant ? " k-quant" : ""),
                  2e-3, [&](Side& s, Random& r) {
                    Q4Source src;
                    src.n = c.n;
                    src.k = c.k;
                    src.group_size = c.group_size;
                    for (int64_t i = 0; i < c.n * c.k; ++i)
                      src.q.push_back(static_cast<uint8_t>(r.index(16)));
                    const int64_t groups = c.n * (c.k / c.group_size);
                    for (int64_t i = 0; i < groups; ++i) {
                      if (c.k_quant) {
                        src.sub_scale.push_back(static_cast<uint8_t>(r.index(64)));
                        src.zero.push_back(static_cast<uint8_t>(r.index(64)));
                      } else {
                        src.scale.push_back(f32_to_f16(std::fabs(r.value(0.05f))));
                        src.zero.push_back(static_cast<uint8_t>(r.index(17)));
                      }
                    }
                    for (int64_t i = 0; c.k_quant && i < groups / 4; ++i) {
                      src.supers.push_back(f32_to_f16(std::fabs(r.value(1e-3f))));
                    }
                    if (c.act_order) {
                      src.perm.resize(static_cast<size_t>(c.k));
                      std::iota(src.perm.begin(), src.perm.end(), 0);
                      std::shuffle(src.perm.begin(), src.perm.end(), r.engine());
                    }
                    auto layout = Q4Layout::make(c.n, c.k, c.group_size, c.act_order, c.k_quant);
                    TS_CHECK(layout.is_ok());
                    std::vector<uint8_t> blob(layout.value().bytes);
                    pack_q4(src, layout.value(), blob.data());
                    TensorView x =
                        s.upload(r.values(static_cast<size_t>(c.m * c.k)), DType::kF32, {c.m, c.k});
                    void* dev = s.raw(blob.size());
                    s.backend()->copy(dev, blob.data(), blob.size());
                    const TensorView w = q4_view(dev, layout.value(), s.backend()->device());
                    TensorView b = s.upload(r.values(static_cast<size_t>(c.n)), DType::kF32, {c.n});
                    TensorView y = s.poisoned(DType::kF32, {c.m, c.n});
                    s.backend()->gemm(x, w, c.bias ? &b : nullptr, y);
                    return std::vector<TensorView>{y};
                  });
  }
}

// Q8 (W8A16) weights, GGUF's Q6_K (groups of 16) and Q8_0 (groups of 32) repacked, and with mins
// (Q5_K, Q4_1, Q2_K): the fused GEMV sizes and prefill (f16 tiles through cuBLAS on CUDA), also
// with rows of activations beyond f16's range (every fifth row times 2e5, as massive activations
// reach in some models).
TEST_P(BackendParityTest, Q8Gemm) {
  struct Case {
    int64_t m, n, k;
    int32_t group_size;
    bool bias;
    float big_rows;  // factor of every fifth row of x
    bool mins = false;
  };
  const Case cases[] = {{1, 256, 512, 16, false, 1.0f},     {8, 96, 256, 32, true, 1.0f},
                        {70, 128, 1024, 16, true, 1.0f},    {40, 64, 512, 32, false, 2e5f},
                        {3, 96, 512, 32, true, 1.0f, true}, {24, 64, 256, 16, false, 1.0f, true}};
  for (const Case& c : cases) {
    expect_parity("q8 gemm " + std::to_string(c.m) + "x" + std::to_string(c.k) + "x" +
                      std::to_string(c.n) + " g" + std::to_string(c.group_size) +
                      (c.big_rows != 1.0f ? " big rows" : "") + (c.mins ? " mins" : ""),
                  2e-3, [&](Side& s, Random& r) {
                    auto layout = Q8Layout::make(c.n, c.k, c.group_size, c.mins);
                    TS_CHECK(layout.is_ok());
                    const Q8Layout& l = layout.value();
                    std::vector<uint8_t> blob(l.bytes);
                    for (int64_t i = 0; i < c.n * c.k; ++i)
                      blob[static_cast<size_t>(i)] = static_cast<uint8_t>(r.index(256));
                    for (int64_t g = 0; g < c.n * l.groups(); ++g) {
                      const float scale = r.value(2e-3f);
                      std::memcpy(blob.data() + l.scales_offset + g * 4, &scale, 4);
                      if (c.mins) {
                        const float min = r.value(2e-2f);
                        std::memcpy(blob.data() + l.mins_offset + g * 4, &min, 4);
                      }
                    }
                    std::vector<float> xs = r.values(static_cast<size_t>(c.m * c.k));
                    for (int64_t i = 0; i < c.m; i += 5) {
                      for (int64_t j = 0; j < c.k; ++j) xs[i * c.k + j] *= c.big_rows;
                    }
                    TensorView x = s.upload(xs, DType::kF32, {c.m, c.k});
                    void* dev = s.raw(blob.size());
                    s.backend()->copy(dev, blob.data(), blob.size());
                    const TensorView w = q8_view(dev, l, s.backend()->device());
                    TensorView b = s.upload(r.values(static_cast<size_t>(c.n)), DType::kF32, {c.n});
                    TensorView y = s.poisoned(DType::kF32, {c.m, c.n});
                    s.backend()->gemm(x, w, c.bias ? &b : nullptr, y);
                    return std::vector<TensorView>{y};
                  });
  }
}

TEST_P(BackendParityTest, NormsSiluSoftmax) {
  for (DType wt : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t d : {64, 1000}) {
      const std::string tag = std::string(dtype_name(wt)) + " d=" + std::to_string(d);
      expect_parity("rmsnorm " + tag, 2e-5, [&](Side& s, Random& r) {
        TensorView x = s.upload(r.values(static_cast<size_t>(9 * d)), DType::kF32, {9, d});
        TensorView w = s.upload(r.values(static_cast<size_t>(d)), wt, {d});
        TensorView y = s.poisoned(DType::kF32, {9, d});
        s.backend()->rmsnorm(x, w, 1e-6f, y);
        return std::vector<TensorView>{y};
      });
      expect_parity("add_rmsnorm " + tag, 2e-5, [&](Side& s, Random& r) {
        TensorView res = s.upload(r.values(static_cast<size_t>(5 * d)), DType::kF32, {5, d});
        TensorView x = s.upload(r.values(static_cast<size_t>(5 * d)), DType::kF32, {5, d});
        TensorView w = s.upload(r.values(static_cast<size_t>(d)), wt, {d});
        s.backend()->add_rmsnorm(res, x, w, 1e-5f, x);  // y aliases x, as the model calls it
        return std::vector<TensorView>{res, x};
      });
    }
  }
  expect_parity("silu_mul", 2e-5, [&](Side& s, Random& r) {
    TensorView g = s.upload(r.values(6 * 300, 4.0f), DType::kF32, {6, 300});
    TensorView u = s.upload(r.values(6 * 300), DType::kF32, {6, 300});
    TensorView o = s.poisoned(DType::kF32, {6, 300});
    s.backend()->silu_mul(g, u, o);
    return std::vector<TensorView>{o};
  });
  expect_parity("softmax", 2e-5, [&](Side& s, Random& r) {
    TensorView x = s.upload(r.values(4 * 1500, 8.0f), DType::kF32, {4, 1500});
    s.backend()->softmax(x);
    return std::vector<TensorView>{x};
  });
}

TEST_P(BackendParityTest, EmbeddingGatherRope) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    expect_parity("embedding " + std::string(dtype_name(dt)), 1e-6, [&](Side& s, Random& r) {
      TensorView table = s.upload(r.values(50 * 24), dt, {50, 24});
      std::vector<int32_t> ids(11);
      for (int32_t& id : ids) id = r.index(50);
      StepInputs in;
      in.token_ids = ids.data();
      in.attn.num_tokens = 11;
      const StepInputs staged = s.backend()->stage_step(in);
      TensorView out = s.poisoned(DType::kF32, {11, 24});
      s.backend()->embedding(staged.token_ids, table, out);
      return std::vector<TensorView>{out};
    });
  }
  expect_parity("gather_rows", 1e-6, [&](Side& s, Random& r) {
    TensorView src = s.upload(r.values(20 * 40), DType::kF32, {20, 40});
    std::vector<int32_t> rows = {19, 0, 7, 7, 3};
    StepInputs in;
    in.logit_rows = rows.data();
    in.num_logit_rows = 5;
    const StepInputs staged = s.backend()->stage_step(in);
    TensorView dst = s.poisoned(DType::kF32, {5, 40});
    s.backend()->gather_rows(src, staged.logit_rows, dst);
    return std::vector<TensorView>{dst};
  });
  struct RopeCase {
    int32_t rotary_dim, head_dim;
    RopeStyle style;
  };
  for (const RopeCase& c : {RopeCase{64, 64, RopeStyle::kNeox}, RopeCase{32, 64, RopeStyle::kNeox},
                            RopeCase{128, 128, RopeStyle::kInterleaved}}) {
    expect_parity("rope " + std::to_string(c.rotary_dim) + "/" + std::to_string(c.head_dim), 2e-5,
                  [&](Side& s, Random& r) {
                    const int32_t half = c.rotary_dim / 2, max_pos = 4096;
                    // The tables as engine/rope.cc makes them: f32 angle, then cos and sin.
                    std::vector<float> inv(static_cast<size_t>(half));
                    for (int32_t i = 0; i < half; ++i) {
                      inv[static_cast<size_t>(i)] = static_cast<float>(
                          1.0 / std::pow(10000.0, static_cast<double>(2 * i) / c.rotary_dim));
                    }
                    std::vector<float> cs(static_cast<size_t>(max_pos * half)), sn(cs.size());
                    for (int32_t p = 0; p < max_pos; ++p) {
                      for (int32_t i = 0; i < half; ++i) {
                        const float a = static_cast<float>(p) * inv[static_cast<size_t>(i)];
                        cs[static_cast<size_t>(p * half + i)] = std::cos(a);
                        sn[static_cast<size_t>(p * half + i)] = std::sin(a);
                      }
                    }
                    const int64_t t = 9, hq = 4, hk = 2;
                    TensorView q = s.upload(r.values(static_cast<size_t>(t * hq * c.head_dim)),
                                            DType::kF32, {t, hq, c.head_dim});
                    TensorView k = s.upload(r.values(static_cast<size_t>(t * hk * c.head_dim)),
                                            DType::kF32, {t, hk, c.head_dim});
                    std::vector<int32_t> pos(static_cast<size_t>(t));
                    for (int32_t& p : pos) p = r.index(max_pos);
                    StepInputs in;
                    in.positions = pos.data();
                    in.attn.num_tokens = static_cast<int32_t>(t);
                    const StepInputs staged = s.backend()->stage_step(in);
                    RopeTable table{cs.data(), sn.data(), c.rotary_dim,
                                    max_pos,   c.style,   inv.data()};
                    s.backend()->rope(q, k, staged.positions, table);
                    s.backend()->synchronize();  // the tables are host memory of this scope
                    return std::vector<TensorView>{q, k};
                  });
  }
}

TEST_P(BackendParityTest, ArgmaxRowsTakesTheLowestOfTiedMaxima) {
  const int64_t rows = 9, n = 5000;
  Random r(seed_);
  std::vector<float> values = r.values(static_cast<size_t>(rows * n), 10.0f);
  // Row i's maximum appears twice, at columns a < b: the lowest wins.
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t a = r.index(static_cast<int32_t>(n - 1));
    const int64_t b = a + 1 + r.index(static_cast<int32_t>(n - 1 - a));
    values[static_cast<size_t>(i * n + a)] = 11.0f;
    values[static_cast<size_t>(i * n + b)] = 11.0f;
  }
  const std::vector<int32_t> which = {8, 0, 3, 3, 5};
  std::vector<int32_t> want(which.size()), got(which.size(), -7);
  {
    Side ref(reference_.get());
    TensorView logits = ref.upload(values, DType::kF32, {rows, n});
    reference_->argmax_rows(logits, which.data(), static_cast<int32_t>(which.size()), want.data());
  }
  Side cand(candidate_.get());
  TensorView logits = cand.upload(values, DType::kF32, {rows, n});
  candidate_->argmax_rows(logits, which.data(), static_cast<int32_t>(which.size()), got.data());
  EXPECT_EQ(got, want) << "seed " << seed_;
  for (size_t i = 0; i < which.size(); ++i) {
    const float* row = values.data() + which[i] * n;
    EXPECT_EQ(want[i], std::max_element(row, row + n) - row);
  }
}

// sample_rows against choose_token. Each row's top_p, min_p and draw are placed midway between
// the candidates' cumulative probabilities, so that sums taken in another order (a GPU's) cannot
// move a boundary past a candidate.
TEST_P(BackendParityTest, SampleRowsDrawsAsTheHostSampler) {
  const int64_t rows = 6, n = 3000;
  Random r(seed_);
  const std::vector<float> values = r.values(static_cast<size_t>(rows * n), 6.0f);
  std::vector<SampleRow> params;
  std::vector<int32_t> intended;  // the candidate each draw was placed on
  for (int64_t i = 0; i < rows; ++i) {
    SampleRow p;
    p.row = static_cast<int32_t>(rows - 1 - i);
    p.temperature = 0.6 + 0.2 * static_cast<double>(i);
    p.top_k = i % 3 == 0 ? 0 : (i % 3 == 1 ? 40 : 1);
    // The candidates' probabilities, as choose_token makes them.
    const float* row = values.data() + p.row * n;
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [row](int32_t a, int32_t b) { return row[a] > row[b]; });
    const int32_t k = p.top_k > 0 ? p.top_k : static_cast<int32_t>(n);
    const float inv_t = static_cast<float>(1.0 / p.temperature);
    const float max = row[order[0]] * inv_t;
    std::vector<double> prob(static_cast<size_t>(k));
    double sum = 0;
    for (int32_t j = 0; j < k; ++j) {
      prob[static_cast<size_t>(j)] =
          std::exp(static_cast<double>(row[order[static_cast<size_t>(j)]] * inv_t - max));
      sum += prob[static_cast<size_t>(j)];
    }
    std::vector<double> cum(static_cast<size_t>(k));
    double c = 0;
    for (int32_t j = 0; j < k; ++j) {
      prob[static_cast<size_t>(j)] /= sum;
      c += prob[static_cast<size_t>(j)];
      cum[static_cast<size_t>(j)] = c;
    }
    int32_t keep = k;
    if (i % 2 == 1 && k > 2) {  // top-p between two candidates' cumulative mass
      const int32_t j = 1 + r.index(k - 2);
      p.top_p = (cum[static_cast<size_t>(j - 1)] + cum[static_cast<size_t>(j)]) / 2;
      keep = j + 1;
    }
    if (i == 4 && keep > 2) {  // min-p between two candidates' ratios to the first
      const int32_t m = 1 + r.index(keep - 2);
      p.min_p = (prob[static_cast<size_t>(m)] + prob[static_cast<size_t>(m) + 1]) / 2 / prob[0];
      keep = m + 1;
    }
    // The draw: midway through a random kept candidate's share.
    const int32_t pick = r.index(keep);
    const double before = pick > 0 ? cum[static_cast<size_t>(pick - 1)] : 0.0;
    p.uniform = (before + prob[static_cast<size_t>(pick)] / 2) / cum[static_cast<size_t>(keep - 1)];
    params.push_back(p);
    intended.push_back(order[static_cast<size_t>(pick)]);
  }
  std::vector<int32_t> want(params.size()), got(params.size(), -7);
  {
    Side ref(reference_.get());
    TensorView logits = ref.upload(values, DType::kF32, {rows, n});
    reference_->sample_rows(logits, params.data(), static_cast<int32_t>(params.size()),
                            want.data());
  }
  Side cand(candidate_.get());
  TensorView logits = cand.upload(values, DType::kF32, {rows, n});
  candidate_->sample_rows(logits, params.data(), static_cast<int32_t>(params.size()), got.data());
  EXPECT_EQ(want, intended) << "the reference, seed " << seed_;
  EXPECT_EQ(got, want) << "seed " << seed_;
}

TEST_P(BackendParityTest, ApplyPenalties) {
  const int64_t rows = 4, n = 3000;
  expect_parity("apply_penalties", 1e-6, [&](Side& s, Random& r) {
    TensorView logits =
        s.upload(r.values(static_cast<size_t>(rows * n), 5.0f), DType::kF32, {rows, n});
    std::vector<PenaltyRow> pr;
    std::vector<PenaltyToken> tokens;
    for (int32_t i = 0; i < 3; ++i) {  // row 2 of the 4 has none
      PenaltyRow row;
      row.row = i == 2 ? 3 : i;
      row.repetition = i == 1 ? 1.0f : 1.25f;
      row.presence = 0.5f * static_cast<float>(i);
      row.frequency = 0.2f;
      row.begin = static_cast<int32_t>(tokens.size());
      for (int32_t t = 0; t < 200; t += 1 + i) {  // distinct tokens
        PenaltyToken pt;
        pt.token = t * 7 % static_cast<int32_t>(n);
        pt.count = t % 4;
        pt.seen = static_cast<uint8_t>(t % 3 != 0);
        pt.suppress = static_cast<uint8_t>(t % 50 == 0);
        tokens.push_back(pt);
      }
      row.end = static_cast<int32_t>(tokens.size());
      pr.push_back(row);
    }
    s.backend()->apply_penalties(logits, pr.data(), static_cast<int32_t>(pr.size()), tokens.data(),
                                 static_cast<int32_t>(tokens.size()));
    return std::vector<TensorView>{logits};
  });
}

// A batch of sequences over a paged cache: each has `cached` tokens from earlier steps and
// `new_tokens` in this one (decode: 1; prefill: all; chunked prefill: some).
struct AttnCase {
  std::string name;
  DType kv;
  int32_t heads, kv_heads, head_dim, window;
  std::vector<std::pair<int32_t, int32_t>> seqs;  // (cached, new_tokens)
  bool alibi = false;                             // ALiBi slopes (Baichuan 13B)
};

TEST_P(BackendParityTest, WriteKvAndPagedAttention) {
  const AttnCase cases[] = {
      {"decode f32 mha", DType::kF32, 4, 4, 64, 0, {{0, 1}, {17, 1}, {40, 1}}},
      {"decode bf16 gqa4 long", DType::kBF16, 8, 2, 128, 0, {{1300, 1}, {3, 1}}},
      {"prefill f16 gqa2", DType::kF16, 4, 2, 64, 0, {{0, 37}, {0, 5}}},
      {"chunked prefill bf16 gqa7", DType::kBF16, 14, 2, 64, 0, {{600, 20}, {30, 1}}},
      {"window bf16", DType::kBF16, 4, 1, 64, 24, {{100, 3}, {10, 1}}},
      {"decode bf16 gqa8", DType::kBF16, 16, 2, 128, 0, {{700, 1}, {5, 1}}},
      {"window over several splits", DType::kBF16, 4, 2, 64, 700, {{1500, 2}, {20, 1}}},
      {"prefill f32 head_dim 80", DType::kF32, 4, 4, 80, 0, {{3, 9}, {0, 4}}},
      {"alibi decode f32 6 heads", DType::kF32, 6, 6, 64, 0, {{40, 1}, {700, 1}}, true},
      {"alibi chunked prefill bf16", DType::kBF16, 4, 4, 128, 0, {{600, 20}, {0, 3}}, true},
  };
  const int32_t block_size = 16, num_layers = 2, layer = 1;
  for (const AttnCase& c : cases) {
    expect_parity(c.name, 2e-5, [&](Side& s, Random& r) {
      KvBlockLayout l;
      l.num_layers = num_layers;
      l.block_size = block_size;
      l.num_kv_heads = c.kv_heads;
      l.head_dim = c.head_dim;
      l.dtype = c.kv;
      int32_t blocks = 0;
      for (const auto& [cached, added] : c.seqs)
        blocks += (cached + added + block_size - 1) / block_size;
      // A shuffled block assignment, so that tables are not the identity.
      std::vector<int32_t> ids(static_cast<size_t>(blocks + 3));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
      std::shuffle(ids.begin(), ids.end(), r.engine());
      KvCacheView cache;
      cache.layout = l;
      cache.num_blocks = static_cast<int32_t>(ids.size());
      const size_t cache_bytes = l.block_bytes() * ids.size();
      std::vector<float> cache_values(cache_bytes / dtype_size(c.kv));
      for (float& v : cache_values) v = r.value();
      std::vector<uint8_t> cache_host(cache_bytes);
      convert(cache_values.data(), DType::kF32, cache_host.data(), c.kv, cache_values.size());
      cache.base = s.raw(cache_bytes);
      s.backend()->copy(cache.base, cache_host.data(), cache_bytes);

      const int32_t num_seqs = static_cast<int32_t>(c.seqs.size());
      int32_t max_blocks = 0;
      for (const auto& [cached, added] : c.seqs) {
        max_blocks = std::max(max_blocks, (cached + added + block_size - 1) / block_size);
      }
      std::vector<int32_t> query_start{0}, seq_lens,
          tables(static_cast<size_t>(num_seqs * max_blocks), -1), slots, positions;
      size_t next = 0;
      for (int32_t i = 0; i < num_seqs; ++i) {
        const auto [cached, added] = c.seqs[static_cast<size_t>(i)];
        const int32_t len = cached + added;
        for (int32_t b = 0; b < (len + block_size - 1) / block_size; ++b) {
          tables[static_cast<size_t>(i * max_blocks + b)] = ids[next++];
        }
        for (int32_t p = cached; p < len; ++p) {
          const int32_t block = tables[static_cast<size_t>(i * max_blocks + p / block_size)];
          slots.push_back(block * block_size + p % block_size);
          positions.push_back(p);
        }
        query_start.push_back(query_start.back() + added);
        seq_lens.push_back(len);
      }
      const int32_t t = query_start.back();
      StepInputs in;
      in.positions = positions.data();
      in.attn.num_seqs = num_seqs;
      in.attn.num_tokens = t;
      in.attn.query_start = query_start.data();
      in.attn.seq_lens = seq_lens.data();
      in.attn.block_tables = tables.data();
      in.attn.max_blocks_per_seq = max_blocks;
      in.attn.slot_mapping = slots.data();
      const StepInputs staged = s.backend()->stage_step(in);

      TensorView k = s.upload(r.values(static_cast<size_t>(t * c.kv_heads * c.head_dim)),
                              DType::kF32, {t, c.kv_heads, c.head_dim});
      TensorView v = s.upload(r.values(static_cast<size_t>(t * c.kv_heads * c.head_dim)),
                              DType::kF32, {t, c.kv_heads, c.head_dim});
      TensorView q = s.upload(r.values(static_cast<size_t>(t * c.heads * c.head_dim)), DType::kF32,
                              {t, c.heads, c.head_dim});
      TensorView out = s.poisoned(DType::kF32, {t, c.heads, c.head_dim});
      s.backend()->write_kv(layer, k, v, staged.attn, cache);
      AttentionParams params;
      params.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      params.sliding_window = c.window;
      std::vector<float> slopes;  // large enough to matter against the scores
      for (int32_t h = 0; h < c.heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
      if (c.alibi) {
        params.alibi_slopes = s.upload(slopes, DType::kF32, {c.heads}).ptr<const float>();
      }
      s.backend()->paged_attention(layer, q, staged.attn, cache, params, out);
      TensorView whole = TensorView::contiguous(
          cache.base, c.kv, {static_cast<int64_t>(cache_values.size())}, s.backend()->device());
      return std::vector<TensorView>{out, whole};
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Candidates, BackendParityTest,
                         ::testing::Values(std::string("cpu_fastest"), std::string("cuda"),
                                           std::string("cuda_deterministic")),
                         candidate_name);

}  // namespace
}  // namespace tierserve

// DESIGN.md §6 invariant 1 for weight offload: in --deterministic mode, greedy decoding on a
// fixture model gives bit-identical logits whatever the placement of the weights: all
// resident; layers streamed from the host tier; layers streamed from disk, read in place from
// the safetensors files or from a one-time copy in --offload-dir; dummy weights streamed.
// Also: nothing is left behind in --offload-dir, and a start-up that cannot fit says why.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/units.h"
#include "engine/model.h"
#include "engine/model_weights.h"
#include "engine/weight_loading.h"
#include "kernels/backend_registry.h"
#include "memory/kv_pool.h"
#include "offload/weight_streamer.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A scratch directory in the build tree (the offload dir), removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    std::string templ = std::string(TIERSERVE_TEST_TMP_DIR) + "/streamed_weights_XXXXXX";
    TS_CHECK(mkdtemp(templ.data()) != nullptr) << templ;
    path_ = templ;
  }
  ~ScratchDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Greedy decoding of one sequence: a 7-token prompt, then `steps` single-token steps. Returns
// every step's logits, concatenated.
std::vector<float> greedy_logits(const ModelConfig& c, Backend* backend, WeightProvider* weights,
                                 int steps = 6) {
  const int32_t block_size = 4, max_blocks = 8;
  KvBlockLayout layout{c.num_layers, block_size, c.num_kv_heads, c.head_dim, c.dtype};
  auto pool = KvPool::create(backend, layout, max_blocks);
  TS_CHECK(pool.is_ok()) << pool.status().to_string();
  auto model = Model::create(c, backend, weights, 16, 1, block_size * max_blocks);
  TS_CHECK(model.is_ok()) << model.status().to_string();
  std::vector<int32_t> table = {6, 2, 7, 0, 5, 1, 3, 4};  // scattered physical blocks
  std::vector<int32_t> tokens = {5, 9, 13, 17, 21, 25, 29};
  std::vector<float> out;
  int32_t done = 0;  // tokens already in the cache
  for (int step = 0; step <= steps; ++step) {
    std::vector<int32_t> ids, positions, slots;
    for (int32_t p = done; p < static_cast<int32_t>(tokens.size()); ++p) {
      ids.push_back(tokens[static_cast<size_t>(p)]);
      positions.push_back(p);
      slots.push_back(table[static_cast<size_t>(p / block_size)] * block_size + p % block_size);
    }
    const int32_t n = static_cast<int32_t>(ids.size());
    const int32_t seq_len = static_cast<int32_t>(tokens.size());
    std::vector<int32_t> query_start = {0, n}, seq_lens = {seq_len}, rows = {n - 1};
    ForwardBatch fb;
    fb.token_ids = ids.data();
    fb.positions = positions.data();
    fb.attn.num_seqs = 1;
    fb.attn.num_tokens = n;
    fb.attn.query_start = query_start.data();
    fb.attn.seq_lens = seq_lens.data();
    fb.attn.block_tables = table.data();
    fb.attn.max_blocks_per_seq = max_blocks;
    fb.attn.slot_mapping = slots.data();
    fb.logit_rows = rows.data();
    fb.num_logit_rows = 1;
    auto logits = model.value()->forward(fb, pool.value()->view());
    TS_CHECK(logits.is_ok()) << logits.status().to_string();
    const float* l = logits.value().ptr<float>();
    out.insert(out.end(), l, l + c.vocab_size);
    tokens.push_back(static_cast<int32_t>(std::max_element(l, l + c.vocab_size) - l));
    done = seq_len;
  }
  return out;
}

std::unique_ptr<Backend> deterministic_backend() {
  BackendOptions o;
  o.deterministic = true;
  auto b = create_backend(o);
  TS_CHECK(b.is_ok()) << b.status().to_string();
  return std::move(b).value();
}

// GiB that reach exactly `layers` decoder layers of the model's device layout.
double layers_gib(const ModelConfig& c, const fs::path& dir, LoadFormat format, Backend* backend,
                  int layers) {
  auto w = resolve_weights(c, dir, format, backend, 0);
  TS_CHECK(w.is_ok()) << w.status().to_string();
  return static_cast<double>(w.value().unit_bytes(layer_unit(0)) * static_cast<uint64_t>(layers)) /
         static_cast<double>(kGiB);
}

int count_tier(const Placement& p, WeightTier t) {
  return static_cast<int>(std::count(p.tiers.begin(), p.tiers.end(), t));
}

// One placement to compare against all-resident.
struct Variant {
  std::string name;
  int host_layers = 0;  // layers forced to the host tier
  int disk_layers = 0;  // layers forced to disk
  bool in_place = true;
  int32_t depth = 2;
};

std::vector<Variant> variants(int num_layers) {
  const int half = std::max(1, num_layers / 2);
  return {
      {"resident", 0, 0, true, 2},
      {"half host", half, 0, true, 2},
      {"all host, depth 1", num_layers, 0, true, 1},
      {"half disk in place", 0, half, true, 2},
      {"half disk one-time copy", 0, half, false, 2},
      {"host and disk, depth 3", half, num_layers - half, true, 3},
  };
}

// Loads with `v` and checks that the placement is what was asked.
LoadedWeights load_variant(const ModelConfig& c, const fs::path& dir, LoadFormat format,
                           Backend* backend, const Variant& v, const fs::path& offload_dir) {
  WeightTierOptions o;
  o.prefetch_depth = v.depth;
  o.cpu_offload_gb = v.host_layers > 0 ? layers_gib(c, dir, format, backend, v.host_layers) : 0.0;
  if (v.disk_layers > 0) {
    o.disk_offload_gb = layers_gib(c, dir, format, backend, v.disk_layers);
    o.offload_dir = offload_dir;
  }
  o.read_checkpoint_in_place = v.in_place;
  std::vector<LoadProgress> progress;
  o.on_progress = [&progress](const LoadProgress& p) { progress.push_back(p); };
  auto loaded = load_tiered_weights(c, dir, format, backend, o);
  TS_CHECK(loaded.is_ok()) << v.name << ": " << loaded.status().to_string();
  // Progress: once per unit, growing, ending at every unit and byte.
  EXPECT_EQ(progress.size(), static_cast<size_t>(c.num_layers + 2)) << v.name;
  for (size_t i = 0; i < progress.size(); ++i) {
    EXPECT_EQ(progress[i].units_done, static_cast<int32_t>(i + 1)) << v.name;
    EXPECT_EQ(progress[i].num_units, c.num_layers + 2) << v.name;
    if (i > 0) {
      EXPECT_GT(progress[i].bytes_done, progress[i - 1].bytes_done) << v.name;
    }
  }
  if (!progress.empty()) {
    EXPECT_EQ(progress.back().bytes_done, progress.back().total_bytes) << v.name;
  }
  const Placement& p = loaded.value().placement;
  EXPECT_EQ(count_tier(p, WeightTier::kHost), v.host_layers) << v.name << "\n" << p.report();
  EXPECT_EQ(count_tier(p, WeightTier::kDisk), v.disk_layers) << v.name << "\n" << p.report();
  EXPECT_FALSE(p.automatic) << v.name;
  if (v.disk_layers > 0) {
    // The fixtures' tensors sit at offsets aligned to their dtype: read in place, no copy;
    // except layers converted at load (4-bit repacking, GGUF), which go through the copy.
    const bool converted = c.quant.method != QuantMethod::kNone || c.gguf;
    EXPECT_EQ(p.disk_bytes == 0, v.in_place && !converted) << v.name;
  }
  return std::move(loaded).value();
}

void expect_identical(const std::vector<float>& a, const std::vector<float>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
      << what << ": logits differ from the all-resident run";
}

class StreamedWeightsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamedWeightsTest, GreedyLogitsIdenticalWhateverThePlacement) {
  const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / GetParam();
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  const ModelConfig& c = config.value();
  auto backend = deterministic_backend();
  std::vector<float> reference;
  {
    auto weights = load_weights(c, dir, LoadFormat::kAuto, backend.get());
    ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
    reference = greedy_logits(c, backend.get(), weights.value().get());
  }
  for (const Variant& v : variants(c.num_layers)) {
    ScratchDir offload;
    {
      LoadedWeights w = load_variant(c, dir, LoadFormat::kAuto, backend.get(), v, offload.path());
      expect_identical(reference, greedy_logits(c, backend.get(), w.provider.get()), v.name);
      if (auto* s = dynamic_cast<WeightStreamer*>(w.provider.get())) {
        EXPECT_EQ(s->stats().failures, 0) << v.name;
        EXPECT_EQ(s->stats().restarts, 0) << v.name << ": the pipeline followed the model";
        EXPECT_GT(s->stats().streamed_acquires, 0) << v.name;
      } else {
        EXPECT_EQ(v.host_layers + v.disk_layers, 0) << v.name;
      }
    }
    EXPECT_TRUE(fs::is_empty(offload.path())) << v.name << ": files left in --offload-dir";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StreamedWeightsTest,
                         ::testing::Values("llama_gqa_f32", "qwen2_f32", "llama_tied_bf16",
                                           "qwen3_bf16", "llama_bias_f32", "baichuan2_rope_bf16",
                                           "chatglm_bias_f32", "llama_awq_f16", "qwen2_gptq_f16",
                                           "llama_gguf_f32", "llama_gguf_q4k"));

// Dummy weights of an 8-layer shape: the same values whatever the placement, so that streamed
// runs (host, disk through the one-time copy) match the resident one.
TEST(StreamedWeightsDummyTest, DummyWeightsIdenticalWhateverThePlacement) {
  ScratchDir model_dir;
  {
    std::ifstream in(fs::path(TIERSERVE_FIXTURES_DIR) / "llama_gqa_f32" / "config.json");
    std::stringstream text;
    text << in.rdbuf();
    std::string s = text.str();
    const std::string from = "\"num_hidden_layers\": 3";
    ASSERT_NE(s.find(from), std::string::npos);
    s.replace(s.find(from), from.size(), "\"num_hidden_layers\": 8");
    std::ofstream(model_dir.path() / "config.json") << s;
  }
  auto config = load_model_config(model_dir.path());
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  const ModelConfig& c = config.value();
  ASSERT_EQ(c.num_layers, 8);
  auto backend = deterministic_backend();
  std::vector<float> reference;
  {
    auto weights = load_weights(c, model_dir.path(), LoadFormat::kDummy, backend.get(), 7);
    ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
    reference = greedy_logits(c, backend.get(), weights.value().get());
  }
  for (const Variant& v : variants(c.num_layers)) {
    ScratchDir offload;
    {
      WeightTierOptions o;
      o.prefetch_depth = v.depth;
      o.cpu_offload_gb = v.host_layers > 0 ? layers_gib(c, model_dir.path(), LoadFormat::kDummy,
                                                        backend.get(), v.host_layers)
                                           : 0.0;
      if (v.disk_layers > 0) {
        o.disk_offload_gb =
            layers_gib(c, model_dir.path(), LoadFormat::kDummy, backend.get(), v.disk_layers);
        o.offload_dir = offload.path();
      }
      auto w = load_tiered_weights(c, model_dir.path(), LoadFormat::kDummy, backend.get(), o, 7);
      ASSERT_TRUE(w.is_ok()) << v.name << ": " << w.status().to_string();
      EXPECT_EQ(count_tier(w.value().placement, WeightTier::kHost), v.host_layers) << v.name;
      EXPECT_EQ(count_tier(w.value().placement, WeightTier::kDisk), v.disk_layers) << v.name;
      if (v.disk_layers > 0) {
        EXPECT_GT(w.value().placement.disk_bytes, 0u) << v.name;  // the one-time copy
      }
      expect_identical(reference, greedy_logits(c, backend.get(), w.value().provider.get()),
                       v.name);
    }
    EXPECT_TRUE(fs::is_empty(offload.path())) << v.name << ": files left in --offload-dir";
  }
}

// A device budget too small for the model: placed automatically (with the report saying so),
// same logits. Then one too small for anything: one message naming the flags.
TEST(StreamedWeightsAutoTest, SpillsAutomaticallyAndFailsWithOneMessage) {
  const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / "llama_gqa_f32";
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.is_ok());
  const ModelConfig& c = config.value();
  auto backend = deterministic_backend();
  std::vector<float> reference;
  {
    auto weights = load_weights(c, dir, LoadFormat::kAuto, backend.get());
    ASSERT_TRUE(weights.is_ok());
    reference = greedy_logits(c, backend.get(), weights.value().get());
  }
  auto resolved = resolve_weights(c, dir, LoadFormat::kAuto, backend.get(), 0);
  ASSERT_TRUE(resolved.is_ok());
  const uint64_t total = resolved.value().total_bytes();
  const uint64_t layer = resolved.value().unit_bytes(layer_unit(0));
  ScratchDir offload;
  {
    // Less than the model; enough for it with every layer streamed through a ring of two
    // slots (depth 1), each rounded up to 4 KiB: total - 3 layers + 2 slots.
    WeightTierOptions o;
    o.prefetch_depth = 1;
    o.device_reserved = 2 * kMiB;
    o.device_budget = o.device_reserved + total - layer + 2 * 4096;
    o.offload_dir = offload.path();
    o.host_memory_limit = 0;  // detected
    auto w = load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o);
    ASSERT_TRUE(w.is_ok()) << w.status().to_string();
    const Placement& p = w.value().placement;
    EXPECT_TRUE(p.automatic) << p.report();
    EXPECT_GT(p.num_streamed(), 0);
    EXPECT_LE(p.device_bytes + p.staging_bytes + o.device_reserved, o.device_budget);
    EXPECT_THAT(p.report(), HasSubstr("placed automatically"));
    expect_identical(reference, greedy_logits(c, backend.get(), w.value().provider.get()), "auto");
  }
  {
    WeightTierOptions o;
    o.device_budget = 4 * kKiB;
    o.min_kv_bytes = 64 * kKiB;
    auto w = load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o);
    ASSERT_FALSE(w.is_ok());
    EXPECT_EQ(w.status().code(), StatusCode::kResourceExhausted);
    EXPECT_THAT(w.status().message(), HasSubstr("more is needed"));
    EXPECT_THAT(w.status().message(), HasSubstr("--device-memory-gb"));
    EXPECT_THAT(w.status().message(), HasSubstr("--max-model-len"));
  }
  {
    // The KV tiers' host memory and disk space are not the weights': with more reserved than
    // the machine has, host-streamed weights and one-time copies have no room; weights read
    // in place from the checkpoint need none.
    const uint64_t huge = uint64_t{1} << 50;
    WeightTierOptions o;
    o.cpu_offload_gb = static_cast<double>(layer) / kGiB;
    o.host_reserved = huge;
    auto w = load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o);
    ASSERT_FALSE(w.is_ok());
    EXPECT_THAT(w.status().message(), HasSubstr("of host memory is available"));
    o = WeightTierOptions{};
    o.cpu_offload_gb = 0.0;
    o.disk_offload_gb = static_cast<double>(layer) / kGiB;
    o.offload_dir = offload.path();
    o.disk_reserved = huge;
    ASSERT_TRUE(load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o).is_ok());
    o.read_checkpoint_in_place = false;
    w = load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o);
    ASSERT_FALSE(w.is_ok());
    EXPECT_THAT(w.status().message(), HasSubstr("after the KV disk tier"));
  }
  {
    WeightTierOptions o;
    o.offload_dir = offload.path() / "missing";
    EXPECT_EQ(load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o).status().code(),
              StatusCode::kNotFound);
    o.offload_dir.clear();
    o.cpu_offload_gb = -1;
    EXPECT_EQ(load_tiered_weights(c, dir, LoadFormat::kAuto, backend.get(), o).status().code(),
              StatusCode::kInvalidArgument);
  }
}

// With a packing backend (not --deterministic) streamed host units carry the packed layout and
// in-place disk units the plain one; both must still decode like the resident model does.
TEST(StreamedWeightsPackedTest, PackedHostUnitsAndPlainDiskUnitsAgreeWithResident) {
  const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / "llama_gqa_bf16";
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.is_ok());
  const ModelConfig& c = config.value();
  auto b = create_backend(BackendOptions{});
  ASSERT_TRUE(b.is_ok());
  Backend* backend = b.value().get();
  std::vector<float> reference;
  {
    auto weights = load_weights(c, dir, LoadFormat::kAuto, backend);
    ASSERT_TRUE(weights.is_ok());
    reference = greedy_logits(c, backend, weights.value().get(), 3);
  }
  ScratchDir offload;
  Variant v{"host + disk", 1, c.num_layers - 1, true, 2};
  LoadedWeights w = load_variant(c, dir, LoadFormat::kAuto, backend, v, offload.path());
  const std::vector<float> got = greedy_logits(c, backend, w.provider.get(), 3);
  ASSERT_EQ(got.size(), reference.size());
  float scale = 0, err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    scale = std::max(scale, std::fabs(reference[i]));
    err = std::max(err, std::fabs(got[i] - reference[i]));
  }
  EXPECT_LE(err, 1e-2f * scale);
  const WeightUnit* host_unit = nullptr;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    if (w.placement.tiers[static_cast<size_t>(layer_unit(l))] != WeightTier::kHost) continue;
    auto u = w.provider->acquire(layer_unit(l));
    ASSERT_TRUE(u.is_ok());
    host_unit = u.value();
    EXPECT_EQ(host_unit->tensors[kQProj].packed, backend->packed_weight_bytes(c.dtype, 64, 64) > 0);
    w.provider->release(layer_unit(l));
  }
  EXPECT_NE(host_unit, nullptr);
}

}  // namespace
}  // namespace tierserve

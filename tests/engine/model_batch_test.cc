// Model::forward over several sequences in one step, with scattered KV blocks, against the same
// sequences run one at a time: the batched attention metadata path of DESIGN.md §3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/model.h"
#include "engine/model_weights.h"
#include "kernels/backend_registry.h"
#include "kernels/op_checks.h"
#include "memory/kv_pool.h"

namespace tierserve {
namespace {

namespace fs = std::filesystem;

struct Seq {
  std::vector<int32_t> tokens;  // whole prompt
  std::vector<int32_t> blocks;  // physical blocks, deliberately not in order
};

class ModelBatchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelBatchTest, BatchedStepEqualsSeparateSteps) {
  const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / GetParam();
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  const ModelConfig& c = config.value();
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok());
  auto weights = load_weights(c, dir, LoadFormat::kAuto, backend.value().get());
  ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
  const int32_t block_size = 4;
  KvBlockLayout layout{c.num_layers, block_size, c.num_kv_heads, c.head_dim, c.dtype};
  auto pool = KvPool::create(backend.value().get(), layout, 32);
  ASSERT_TRUE(pool.is_ok());
  auto model = Model::create(c, backend.value().get(), weights.value().get(), 64, 4, 64);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();

  // Three prompts of different lengths over interleaved, reversed block lists.
  std::vector<Seq> seqs = {
      {{5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45}, {30, 3, 17}},
      {{6, 7, 8}, {11}},
      {{100, 90, 80, 70, 60, 50, 40, 30, 20}, {25, 1, 8}},
  };
  const int32_t max_blocks = 3;

  // Runs the given sequences as one step; returns each one's last-token logits.
  auto run = [&](const std::vector<const Seq*>& batch) {
    std::vector<int32_t> ids, positions, slots, query_start = {0}, seq_lens, tables, rows;
    for (const Seq* s : batch) {
      for (size_t i = 0; i < s->tokens.size(); ++i) {
        ids.push_back(s->tokens[i]);
        positions.push_back(static_cast<int32_t>(i));
        slots.push_back(s->blocks[i / block_size] * block_size +
                        static_cast<int32_t>(i) % block_size);
      }
      query_start.push_back(static_cast<int32_t>(ids.size()));
      seq_lens.push_back(static_cast<int32_t>(s->tokens.size()));
      std::vector<int32_t> row = s->blocks;
      row.resize(max_blocks, 0);
      tables.insert(tables.end(), row.begin(), row.end());
      rows.push_back(static_cast<int32_t>(ids.size()) - 1);
    }
    ForwardBatch fb;
    fb.token_ids = ids.data();
    fb.positions = positions.data();
    fb.attn.num_seqs = static_cast<int32_t>(batch.size());
    fb.attn.num_tokens = static_cast<int32_t>(ids.size());
    fb.attn.query_start = query_start.data();
    fb.attn.seq_lens = seq_lens.data();
    fb.attn.block_tables = tables.data();
    fb.attn.max_blocks_per_seq = max_blocks;
    fb.attn.slot_mapping = slots.data();
    fb.logit_rows = rows.data();
    fb.num_logit_rows = static_cast<int32_t>(rows.size());
    auto logits = model.value()->forward(fb, pool.value()->view());
    EXPECT_TRUE(logits.is_ok());
    std::vector<std::vector<float>> out;
    for (int32_t r = 0; r < fb.num_logit_rows; ++r) {
      const float* p = logits.value().ptr<float>() + static_cast<size_t>(r) * c.vocab_size;
      out.emplace_back(p, p + c.vocab_size);
    }
    return out;
  };

  auto batched = run({&seqs[0], &seqs[1], &seqs[2]});
  for (size_t s = 0; s < seqs.size(); ++s) {
    auto alone = run({&seqs[s]})[0];
    float scale = 0, err = 0;
    for (size_t i = 0; i < alone.size(); ++i) {
      scale = std::max(scale, std::fabs(alone[i]));
      err = std::max(err, std::fabs(alone[i] - batched[s][i]));
    }
    EXPECT_LE(err, (c.dtype == DType::kF32 ? 1e-5f : 1e-2f) * scale) << "sequence " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelBatchTest,
                         ::testing::Values("llama_gqa_f32", "qwen3_f32", "mistral_swa_f32",
                                           "qwen2_bf16", "baichuan2_alibi_f32", "chatglm3_f32"));

}  // namespace
}  // namespace tierserve

namespace tierserve {
namespace {

// On the CPU backend, bf16 gemm weights are loaded in oneDNN's packed layout (a tied lm_head as
// a packed copy beside the plain embedding the lookup reads), and in --deterministic mode all
// stay plain for the batch-invariant GEMV kernels.
TEST(ModelWeightsTest, GemmWeightsPackedUnlessDeterministic) {
  const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / "llama_tied_bf16";
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  const ModelConfig& c = config.value();
  for (bool deterministic : {false, true}) {
    BackendOptions o;
    o.deterministic = deterministic;
    auto backend = create_backend(o);
    ASSERT_TRUE(backend.is_ok());
    const bool can_pack = backend.value()->packed_weight_bytes(c.dtype, 64, 64) > 0;
    auto weights = load_weights(c, dir, LoadFormat::kAuto, backend.value().get());
    ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
    WeightProvider& w = *weights.value();
    const WeightUnit* layer = w.acquire(layer_unit(0)).value();
    EXPECT_EQ(layer->tensors[kQProj].packed, can_pack && !deterministic);
    EXPECT_EQ(layer->tensors[kDownProj].packed, can_pack && !deterministic);
    EXPECT_FALSE(layer->tensors[kInputNorm].packed);
    w.release(layer_unit(0));
    const WeightUnit* embedding = w.acquire(kEmbeddingUnit).value();
    EXPECT_FALSE(embedding->tensors[kEmbedTokens].packed);
    const void* table = embedding->tensors[kEmbedTokens].data;
    w.release(kEmbeddingUnit);
    const WeightUnit* head = w.acquire(head_unit(c)).value();
    EXPECT_EQ(head->tensors[kLmHead].packed, can_pack && !deterministic);
    EXPECT_EQ(head->tensors[kLmHead].data == table, !(can_pack && !deterministic));
    w.release(head_unit(c));
  }
}

// Quantized checkpoints stay quantized in the loaded weights: AWQ projections and GGUF Q4_0 /
// Q4_K ones as 4-bit blobs (Q4_K in the k-quant form), those of GGUF's other types (lm_head
// included; Q2_K and Q5_1 with mins) as 8-bit blobs, while embeddings and norms are float. A
// streamed layer then moves the quantized bytes (DESIGN.md's tiers move these blobs as they are).
TEST(ModelWeightsTest, QuantizedCheckpointsStayQuantized) {
  struct Case {
    const char* model;
    DType q;
    bool q_k_quant;             // q_proj is Q4 in the k-quant form (else the zero form)
    DType v, o, down, lm_head;  // their loaded dtypes
  };
  const Case cases[] = {
      {"llama_awq_f16", DType::kQ4, false, DType::kQ4, DType::kQ4, DType::kQ4, DType::kF16},
      {"llama_gguf_f32", DType::kQ4, false, DType::kQ8, DType::kQ8, DType::kQ4, DType::kQ8},
      {"llama_gguf_q4k", DType::kQ4, true, DType::kQ8, DType::kQ4, DType::kQ8, DType::kQ8},
      {"llama_gguf_mix", DType::kQ8, false, DType::kQ8, DType::kQ8, DType::kQ8, DType::kQ8},
  };
  auto backend = create_backend(BackendOptions{});
  ASSERT_TRUE(backend.is_ok());
  for (const Case& t : cases) {
    SCOPED_TRACE(t.model);
    const fs::path dir = fs::path(TIERSERVE_FIXTURES_DIR) / t.model;
    auto config = load_model_config(dir);
    ASSERT_TRUE(config.is_ok()) << config.status().to_string();
    const ModelConfig& c = config.value();
    auto weights = load_weights(c, dir, LoadFormat::kAuto, backend.value().get());
    ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
    WeightProvider& w = *weights.value();
    const WeightUnit* layer = w.acquire(layer_unit(0)).value();
    const TensorView& q = layer->tensors[kQProj];
    EXPECT_EQ(q.dtype, t.q);
    EXPECT_EQ(q.k_quant, t.q_k_quant);
    EXPECT_EQ(q.shape[0], c.num_heads * c.head_dim);
    EXPECT_EQ(q.shape[1], c.hidden_size);
    EXPECT_EQ(layer->tensors[kVProj].dtype, t.v);
    EXPECT_EQ(layer->tensors[kOProj].dtype, t.o);
    EXPECT_EQ(layer->tensors[kDownProj].dtype, t.down);
    EXPECT_TRUE(is_float_dtype(layer->tensors[kInputNorm].dtype));
    w.release(layer_unit(0));
    const WeightUnit* embedding = w.acquire(kEmbeddingUnit).value();
    EXPECT_TRUE(is_float_dtype(embedding->tensors[kEmbedTokens].dtype));
    w.release(kEmbeddingUnit);
    const WeightUnit* head = w.acquire(head_unit(c)).value();
    EXPECT_EQ(head->tensors[kLmHead].dtype, t.lm_head);
    w.release(head_unit(c));
  }
}

}  // namespace
}  // namespace tierserve

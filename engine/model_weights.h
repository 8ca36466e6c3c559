// The tensors of a model (Llama, Qwen2, Qwen3, Mistral, Baichuan, ChatGLM), their checkpoint
// names and expected shapes, and loading them into a WeightProvider from a checkpoint or as dummy
// weights.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/gguf.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "kernels/backend.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"
#include "offload/weight_provider.h"

namespace tierserve {

// Slots of a decoder layer's WeightUnit. Optional tensors (biases, q/k norms) have null data
// when the config does not use them.
enum LayerSlot : int32_t {
  kInputNorm,     // [d]
  kQProj,         // [num_heads * head_dim, d]
  kKProj,         // [num_kv_heads * head_dim, d]
  kVProj,         // [num_kv_heads * head_dim, d]
  kOProj,         // [d, num_heads * head_dim]
  kQBias,         // [num_heads * head_dim]      qkv_bias
  kKBias,         // [num_kv_heads * head_dim]   qkv_bias
  kVBias,         // [num_kv_heads * head_dim]   qkv_bias
  kOBias,         // [d]                         o_bias
  kQNorm,         // [head_dim]                  qk_norm
  kKNorm,         // [head_dim]                  qk_norm
  kPostAttnNorm,  // [d]
  kGateProj,      // [f, d]
  kUpProj,        // [f, d]
  kDownProj,      // [d, f]
  kGateBias,      // [f]                         mlp_bias
  kUpBias,        // [f]                         mlp_bias
  kDownBias,      // [d]                         mlp_bias
  kNumLayerSlots,
};

// Slots of the embedding unit and the head unit.
enum EmbeddingSlot : int32_t { kEmbedTokens, kNumEmbeddingSlots };  // [vocab, d]
enum HeadSlot : int32_t { kFinalNorm, kLmHead, kNumHeadSlots };     // [d], [vocab, d]

// Unit numbering: 0 is the embedding, 1..num_layers the decoder layers, num_layers + 1 the head.
inline int32_t layer_unit(int32_t layer) { return 1 + layer; }
inline int32_t head_unit(const ModelConfig& config) { return config.num_layers + 1; }
inline constexpr int32_t kEmbeddingUnit = 0;

// One tensor the model expects: where it goes, its checkpoint name and its shape.
struct WeightSpec {
  int32_t unit = 0;            // WeightUnit index
  int32_t slot = 0;            // slot within the unit
  std::string name;            // Hugging Face checkpoint name
  std::vector<int64_t> shape;  // expected shape from config.json
  // A slice of a fused checkpoint tensor (Baichuan's W_pack, ChatGLM's query_key_value and
  // dense_h_to_4h): that tensor's shape, of which this spec takes rows [source_row, source_row
  // + shape[0]). Empty: the spec is the whole tensor.
  std::vector<int64_t> source_shape;
  int64_t source_row = 0;
  bool normalize_rows = false;  // each row divided by its L2 norm at load (Baichuan2's NormHead)
  // A 4-bit gemm weight of a quantized checkpoint (ModelConfig::quant): `name` is its .qweight,
  // beside which .qzeros, .scales (and GPTQ's .g_idx) lie; it loads as a Q4 blob.
  bool quantized = false;
  // A GGUF llama-architecture attn_q/attn_k weight or bias whose rows llama.cpp permuted per
  // head (engine/gguf_model.h): heads of rows to undo it for; 0 = none.
  int32_t gguf_heads = 0;
};

// Every tensor `config` requires, in unit order. A tied lm_head is not listed (it shares
// model.embed_tokens.weight).
std::vector<WeightSpec> weight_specs(const ModelConfig& config);

enum class LoadFormat : uint8_t {
  kAuto,   // safetensors from the model directory
  kDummy,  // random weights of the config's shapes and dtype; no checkpoint read
};
bool parse_load_format(const std::string& name, LoadFormat* out);

// Weight loading's progress, reported on the loading thread after each unit is in place (its
// tier's copy written; a unit read in place from the checkpoint counts at once).
struct LoadProgress {
  int32_t units_done = 0, num_units = 0;     // units in place / in all
  uint64_t bytes_done = 0, total_bytes = 0;  // their device-layout bytes
};
using LoadProgressFn = std::function<void(const LoadProgress&)>;

// Loads every weight into the device tier of `backend` (one arena) and returns a provider that
// keeps them resident. Errors name the file and tensor: a missing tensor, a shape that disagrees
// with config.json, a non-float dtype. Dummy weights are drawn from a fixed-seed generator
// (`seed`) with magnitudes like a trained model's (norm weights 1, projections ~N(0, 0.02)).
Result<std::unique_ptr<WeightProvider>> load_weights(const ModelConfig& config,
                                                     const std::filesystem::path& model_dir,
                                                     LoadFormat format, Backend* backend,
                                                     uint64_t seed = 0,
                                                     const LoadProgressFn& on_progress = nullptr);

// --- Building blocks of the loaders (load_weights above, engine/weight_loading.h) ----------

// The model's tensors resolved against their source before anything is allocated: dtypes, the
// device layout (each tensor 64-byte aligned, units in order, each unit one contiguous range)
// and where each tensor comes from.
struct ResolvedWeights {
  LoadFormat format = LoadFormat::kAuto;
  uint64_t seed = 0;                       // dummy weights' seed
  std::unique_ptr<Checkpoint> checkpoint;  // kAuto: the open checkpoint
  std::vector<WeightSpec> specs;           // weight_specs(config)
  std::vector<CheckpointTensor> sources;   // per spec (kAuto); data points at the spec's rows
  std::vector<uint64_t> source_offsets;    // per spec: bytes from the checkpoint tensor's start
                                           // to the spec's rows (non-zero for fused slices)
  std::vector<DType> dtypes;               // per spec: the checkpoint's (kAuto) or config.dtype;
                                           // kQ4 / kQ8 for quantized specs
  std::vector<Q4Layout> q4;                // per spec: a kQ4 spec's blob layout
  std::vector<Q8Layout> q8;                // per spec: a kQ8 spec's blob layout (GGUF)
  // per spec (kAuto, quantized): qweight, qzeros, scales, g_idx (g_idx's data null if absent)
  std::vector<std::array<CheckpointTensor, 4>> q4_sources;
  std::unique_ptr<GgufFile> gguf;                   // a GGUF model's file (ModelConfig::gguf)
  std::vector<const GgufTensorInfo*> gguf_tensors;  // per spec (gguf)
  std::vector<uint64_t> packed;      // per spec, then the tied lm_head's packed copy:
                                     // bytes in the backend's packed layout, 0 = plain
  std::vector<uint64_t> offsets;     // per spec, then the tied copy: device-layout offset
  std::vector<uint64_t> unit_begin;  // per unit, then the total: unit u is the range
                                     // [unit_begin[u], unit_begin[u + 1])
  bool tied_head_packed = false;     // the head holds a packed copy of the embedding

  int32_t num_units() const { return static_cast<int32_t>(unit_begin.size()) - 1; }
  uint64_t total_bytes() const { return unit_begin.back(); }
  uint64_t unit_bytes(int32_t unit) const {
    return unit_begin[static_cast<size_t>(unit) + 1] - unit_begin[static_cast<size_t>(unit)];
  }
  // Whether the head unit holds an lm_head of its own (not just the embedding's table).
  bool head_owns_lm_head(const ModelConfig& config) const {
    return !config.tie_word_embeddings || tied_head_packed;
  }
};

// Opens the checkpoint (kAuto) and checks every tensor's presence, dtype and shape; computes
// the device layout with `backend`'s packed sizes. Errors as load_weights.
Result<ResolvedWeights> resolve_weights(const ModelConfig& config,
                                        const std::filesystem::path& model_dir, LoadFormat format,
                                        Backend* backend, uint64_t seed);

// Bytes of spec `i` as loaded, before packing: a Q4 blob's (its layout's size), else its elements
// in dtypes[i]. (The device tier may hold more: packed layouts pad, and a tied lm_head gets a
// packed copy.)
uint64_t resolved_spec_bytes(const ResolvedWeights& w, size_t i);

// Writes unit `unit` in the device layout at `dst` (unit_bytes(unit) bytes, 64-byte aligned:
// the backend's device memory, or host memory) and returns its views, which point into dst.
// Dummy weights get the same values whatever `dst` is. A tied lm_head that stays plain is the
// embedding's table: `embedding` (the embedding unit, already written) is then required.
WeightUnit write_weight_unit(const ModelConfig& config, const ResolvedWeights& weights,
                             int32_t unit, char* dst, Backend* backend,
                             const WeightUnit* embedding);

// The name of unit `unit`: "embedding", "layer 3", "head".
std::string weight_unit_name(const ModelConfig& config, int32_t unit);
// The number of tensor slots of unit `unit` (kNumEmbeddingSlots, kNumLayerSlots, kNumHeadSlots).
int32_t weight_unit_slots(const ModelConfig& config, int32_t unit);

// Whether `spec` is a weight that gemm multiplies by (and so may take a packed layout).
bool is_gemm_weight(const ModelConfig& config, const WeightSpec& spec);

}  // namespace tierserve

// Serving a GGUF file (llama.cpp's format) as tierserve serves a Hugging Face directory: the
// model config from the file's metadata, and how its tensors become the engine's weights.
//
// Tensor names are llama.cpp's (token_embd, blk.N.attn_q, ..., output_norm, output). For
// architecture "llama", llama.cpp's converter permuted the rows of attn_q and attn_k within each
// head into interleaved rope order; the loader undoes that, back to Hugging Face's rotate_half
// order ("qwen2" and "qwen3" files keep Hugging Face's order). Q4_0 and Q4_K gemm weights
// load as Q4 blobs (exactly: Q4_0 as scale d, zero 8; Q4_K in the k-quant form; groups of 32),
// those of the other quantized types as Q8 blobs (exactly: int8 values, f32 scales per 32 or 16,
// and f32 mins for Q4_1, Q5_1, Q2_K and Q5_K); F32/F16/BF16 tensors as they are; quantized
// embeddings are dequantized to the model's float dtype, as transformers does when it loads a
// GGUF file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "common/status.h"
#include "engine/gguf.h"
#include "engine/model_config.h"
#include "kernels/q4_weight.h"
#include "kernels/q8_weight.h"

namespace tierserve {

// The config of a GGUF file's model. Architectures: llama, qwen2, qwen3. Keys (A = the
// architecture): A.block_count, A.embedding_length, A.feed_forward_length,
// A.attention.head_count, A.attention.head_count_kv, A.attention.key_length, A.context_length,
// A.attention.layer_norm_rms_epsilon, A.rope.freq_base, A.rope.dimension_count,
// A.rope.scaling.type/factor (linear), the rope_freqs tensor (per-frequency factors of
// llama3-scaled models), tokenizer.ggml.bos/eos/eot_token_id. The vocabulary is token_embd's row
// count; lm_head is tied when there is no output tensor. dtype: bf16 if any matrix is BF16, else
// f16 if any is F16 or none is F32 (every matrix quantized), else f32. Errors name the file and the
// key or tensor.
Result<ModelConfig> gguf_model_config(const GgufFile& file);

// Rows of a [rows, cols] llama-architecture attn_q/attn_k weight (or bias, cols = 1) put back
// in Hugging Face order: out row (h, s, j) = in row h * head_dim + 2 * j + s, for heads of
// head_dim = rows / heads rows, s in {0, 1}, j < head_dim / 2. `elem_bytes` bytes per element.
void unpermute_gguf_rows(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_bytes,
                         int32_t heads);

// A Q4_0 tensor [rows, cols] as a Q4 weight: q - 8 times the block's f16 scale, groups of 32.
Q4Source q4_0_to_q4(const uint8_t* data, int64_t rows, int64_t cols);
// A Q4_K tensor [rows, cols] (cols a multiple of 256) as a Q4 weight in the k-quant form: each
// super-block's 8 sub-blocks of 32 become groups, their 6-bit scales and mins kept as they are
// under the block's d and dmin, so that the weight dequantizes exactly as ggml's does.
Q4Source q4_k_to_q4(const uint8_t* data, int64_t rows, int64_t cols);
// A tensor of a ggml type with an 8-bit integer form (GgmlTypeInfo::q8_group > 0) as a Q8 weight
// blob at `dst`, whose layout has the type's q8_group and q8_mins: the values, scales and mins of
// ggml_block_to_q8, so that the weight dequantizes exactly as ggml's.
void ggml_to_q8(GgmlType type, const uint8_t* data, const Q8Layout& layout, void* dst);

}  // namespace tierserve

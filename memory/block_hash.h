// Content hashes of full KV blocks for prefix caching (DESIGN.md §2). A block's hash chains its
// parent's: hash(block i) = SHA-256(hash(block i - 1) || its token ids), and block 0's parent is
// the salt (model, weights and anything else that changes the KV of the same tokens). Equal
// hashes therefore mean equal token prefixes under equal weights. SHA-256, rather than a fast
// non-cryptographic hash, because a crafted collision would let one request read another's KV
// (the reason vLLM made sha256 its default).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tierserve {

using BlockHash = std::array<uint8_t, 32>;

// The root of every chain: SHA-256 of `salt` (e.g. a description of model and weights).
BlockHash hash_salt(std::string_view salt);

// SHA-256(parent || tokens as little-endian int32).
BlockHash hash_block(const BlockHash& parent, const int32_t* tokens, int32_t num_tokens);

// For hash tables: the first 8 bytes (already uniformly distributed).
inline uint64_t short_hash(const BlockHash& h) {
  uint64_t v;
  std::memcpy(&v, h.data(), sizeof v);
  return v;
}

}  // namespace tierserve

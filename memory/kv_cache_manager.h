// KvCacheManager: the policy over the device tier's KV blocks (DESIGN.md §2) — which blocks each
// sequence holds, prefix sharing through the PrefixCache, copy-on-write after a fork — kept
// consistent with the BlockAllocator's ref counts. Queries are const; the matching commit applies
// exactly what the query approved (query, then commit). Not thread-safe: the engine thread owns
// it, and the scheduler is its only caller.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/block_allocator.h"
#include "memory/block_hash.h"
#include "memory/block_table.h"
#include "memory/prefix_cache.h"

namespace tierserve {

struct KvCacheOptions {
  int32_t num_blocks = 0;             // blocks in the device tier
  int32_t block_size = 16;            // tokens per block
  bool enable_prefix_caching = true;  // share full blocks between sequences by content hash
  std::string salt;                   // identifies model and weights; hashed into every block
  int32_t watermark_blocks = 0;       // admission leaves this many blocks free for running ones
  bool record_evictions = false;      // keep evicted cached blocks for take_evictions() (the
                                      // engine spills them to lower tiers)
};

// A cached full block whose content was evicted from the device tier: its bytes stay in the
// block until the step writes it, so they can still be copied down to a lower tier first.
struct EvictedBlock {
  int32_t block = 0;
  BlockHash hash{};
};

// The KV of one sequence. Owned by the sequence; changed only through the manager.
struct SequenceKv {
  explicit SequenceKv(int32_t block_size) : table(block_size) {}
  BlockTable table;               // blocks, and how many tokens have slots reserved
  std::vector<BlockHash> hashes;  // hashes of the first hashes.size() blocks (full, computed)
};

// Cached full blocks matching the start of a token sequence.
struct PrefixHit {
  std::vector<int32_t> blocks;    // in token order
  std::vector<BlockHash> hashes;  // of each block
  int32_t num_tokens = 0;         // blocks.size() * block_size
  int32_t query_tokens = 0;       // tokens looked up (the sequence's length)
};

// A copy-on-write: the whole block `src` is copied to `dst` before the next forward step.
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
};

class KvCacheManager {
 public:
  explicit KvCacheManager(const KvCacheOptions& options);
  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  const KvCacheOptions& options() const { return options_; }
  int32_t block_size() const { return options_.block_size; }
  int32_t num_blocks() const { return allocator_.num_blocks(); }
  // Blocks that can be handed out: free ones and evictable cached ones.
  int32_t num_free_blocks() const { return allocator_.num_free(); }
  // Blocks some sequence holds.
  int32_t num_used_blocks() const { return allocator_.num_allocated(); }
  bool prefix_caching() const { return options_.enable_prefix_caching; }
  const BlockAllocator& allocator() const { return allocator_; }
  const PrefixCache& prefix_cache() const { return cache_; }
  // Prompt tokens looked up in, and found in, the prefix cache at admission (for metrics).
  int64_t prefix_query_tokens() const { return prefix_query_tokens_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }

  // The longest run of cached blocks equal to tokens[0, k * block_size), with k * block_size
  // < num_tokens: the last token is always left to compute, since its logits are needed. Empty
  // when prefix caching is off.
  PrefixHit find_cached_prefix(const int32_t* tokens, int32_t num_tokens) const;
  // The parent hash of every sequence's first block (the salt's).
  const BlockHash& root_hash() const { return root_; }
  // Blocks evicted from the prefix cache since the last call (record_evictions only), in
  // eviction order. Their content is intact until something writes them.
  std::vector<EvictedBlock> take_evictions();

  // Whether a new sequence can hold `num_tokens` tokens, sharing `hit`'s blocks, and still leave
  // the watermark free. `num_tokens` >= hit.num_tokens.
  bool can_admit(const PrefixHit& hit, int32_t num_tokens) const;
  // Commits what can_admit approved: `kv` (empty) takes `hit`'s blocks and fresh ones.
  void admit(SequenceKv& kv, const PrefixHit& hit, int32_t num_tokens);

  // Whether `kv` can grow to hold `num_tokens` tokens in all.
  bool can_append(const SequenceKv& kv, int32_t num_tokens) const;
  // Commits what can_append approved. A partly filled last block that another sequence shares
  // is first replaced by a private block; the copy to make is appended to `copies`.
  void append(SequenceKv& kv, int32_t num_tokens, std::vector<BlockCopy>* copies);

  // `child` (empty) shares every block of `parent` (parallel sampling, n > 1).
  void fork(const SequenceKv& parent, SequenceKv& child);

  // Registers in the prefix cache each full block of `kv` that lies within tokens[0,
  // num_computed), whose K/V are therefore written. `tokens` are the sequence's tokens.
  void cache_blocks(SequenceKv& kv, const int32_t* tokens, int32_t num_computed);

  // Releases every block of `kv`, last first, so that among blocks freed together a chain's
  // leaves are evicted before their parents. Cached content stays findable until evicted.
  void free(SequenceKv& kv);

 private:
  // Blocks to append to `kv` for `num_tokens` tokens, counting a copy-on-write.
  int32_t blocks_to_append(const SequenceKv& kv, int32_t num_tokens) const;
  bool needs_copy(const SequenceKv& kv, int32_t num_tokens) const;
  // A block from the allocator, its cached content (if any) evicted. Precondition: one is free.
  int32_t take_block();

  KvCacheOptions options_;
  BlockAllocator allocator_;
  PrefixCache cache_;
  BlockHash root_;  // hash of the salt: the parent of every sequence's first block
  std::vector<EvictedBlock> evicted_;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace tierserve

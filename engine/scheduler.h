// Scheduler: decides, each engine step, which sequences run and how many of their tokens
// (DESIGN.md §3). Small and pure: it owns the waiting and running queues and changes KV
// metadata only through the KvCacheManager; it never touches the model, so tests drive it with a
// fake runner. Engine thread only.
//
// Policy, per step, within --max-num-batched-tokens tokens and --max-num-seqs sequences:
//   1. running sequences that decode (one uncomputed token), oldest admitted first;
//   2. running sequences in the middle of a chunked prefill, oldest first;
//   3. waiting sequences, first come first served, each taking a prefill chunk as large as the
//      remaining budget, admitted only if its blocks (beyond a prefix-cache hit) fit while the
//      watermark stays free. The queue head is never skipped, so nothing starves.
// When a running sequence cannot get a block, the most recently admitted running sequence is
// preempted. With swap space (the host and disk KV tiers, SwapSpace) that can take its computed
// blocks, it is preempted by swapping: the plan lists its blocks to copy out (the engine does so
// before anything else in the step writes the device tier), its device blocks are freed, and it
// waits in the swapped queue. Otherwise by recompute: its blocks are freed (cached content stays
// findable) and it returns to the front of the waiting queue to be prefilled again with its
// output so far. A step that preempted admits nobody. Swapped sequences resume, oldest first,
// before any waiting sequence is admitted: blocks still in the prefix cache are reused, the rest
// are copied back in (the plan's swap_in, before the forward).
// With a SwapSpace that stores prefix blocks, the prefix cache reaches into the lower tiers too:
// blocks evicted from the device are listed in the plan (spills) for the engine to copy down,
// and an admission whose device hit ends where the lower tiers continue it restores those blocks
// into fresh device blocks (the plan's restores) instead of recomputing them.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "common/status.h"
#include "engine/sequence.h"
#include "memory/kv_cache_manager.h"

namespace tierserve {

struct SchedulerOptions {
  int32_t max_num_seqs = 256;            // running sequences at most
  int32_t max_num_batched_tokens = 512;  // tokens per step at most
  int32_t max_model_len = 0;             // tokens per sequence at most (prompt + output)
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;  // runs tokens[num_computed, num_computed + num_tokens) this step
};

// A preempted sequence's computed blocks, to copy to its swap slots. The scheduler has already
// freed them: the copy must happen before anything else in the step writes the device tier.
struct SwapOut {
  Sequence* seq = nullptr;
  std::vector<int32_t> blocks;  // device blocks of tokens[0, num_computed), in order
};

// A resuming sequence's blocks to copy back: seq->swap_slots[first_slot + i] -> blocks[i]. Slots
// before first_slot are no longer needed (their blocks were found in the prefix cache).
struct SwapIn {
  Sequence* seq = nullptr;
  int32_t first_slot = 0;
  std::vector<int32_t> blocks;  // fresh device blocks, in order
};

// Prefix blocks found only in a lower tier (SwapSpace::has_prefix_block) at admission: each
// stored block hashes[i] is copied into the fresh device block blocks[i].
struct PrefixRestore {
  Sequence* seq = nullptr;
  std::vector<BlockHash> hashes;
  std::vector<int32_t> blocks;
};

// What one step runs.
struct StepPlan {
  std::vector<ScheduledSequence> scheduled;  // in batch order
  std::vector<EvictedBlock> spills;          // evicted prefix blocks to copy down, first of all
  std::vector<SwapOut> swap_out;             // then, before anything writes the device tier
  std::vector<SwapIn> swap_in;               // then, before the copies and the forward
  std::vector<PrefixRestore> restores;       // likewise
  std::vector<BlockCopy> copies;             // copy-on-write, before the forward
  std::vector<Sequence*> preempted;          // sequences preempted this step (either way)
  int32_t num_tokens = 0;                    // sum of scheduled num_tokens
  bool empty() const { return scheduled.empty(); }
};

class Scheduler {
 public:
  // `kv` (and `swap`, when given) must outlive the scheduler. Without `swap`, every preemption
  // is by recompute.
  Scheduler(const SchedulerOptions& options, KvCacheManager* kv, const SwapSpace* swap = nullptr);

  // kInvalidArgument when a sequence of `total_tokens` (prompt + max_tokens) can never run:
  // beyond max_model_len, or more blocks than the whole cache minus the watermark.
  Status check_fits(int32_t prompt_tokens, int32_t max_tokens) const;

  // Queues `seq` (status kWaiting, no blocks) at the back of the waiting queue.
  void add(Sequence* seq);
  // A new running sequence that shares every block of `parent` (running): parallel sampling.
  // `child` has the same tokens and num_computed as `parent` and no blocks.
  void fork(const Sequence& parent, Sequence* child);

  StepPlan schedule();
  // After the forward of `plan`: advances num_computed and registers full blocks in the prefix
  // cache. The engine then appends sampled tokens to sequences with nothing uncomputed.
  void update(const StepPlan& plan);
  // Removes a sequence (finished or aborted) from whichever queue holds it and frees its device
  // blocks. The caller releases its swap slots, if any.
  void finish(Sequence* seq);
  // A swap of `seq` failed (this step's swap_out or swap_in): it is taken out of `plan` and out of
  // its queue, its device blocks are freed, and it waits at the front of the waiting queue to be
  // recomputed. The caller releases its swap slots.
  void recompute(Sequence* seq, StepPlan& plan);

  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_swapped() const { return static_cast<int32_t>(swapped_.size()); }
  bool has_work() const { return !waiting_.empty() || !running_.empty() || !swapped_.empty(); }
  const KvCacheManager& kv() const { return *kv_; }

 private:
  // Makes room for `seq` to run `n` more tokens, preempting from the back of running_ as
  // needed. Returns false when `seq` itself had to be preempted.
  bool reserve(Sequence* seq, int32_t n, StepPlan& plan, int32_t& budget);
  void preempt(Sequence* victim, StepPlan& plan, int32_t& budget);
  void admit_waiting(StepPlan& plan, int32_t& budget);
  // Resumes swapped sequences, oldest first, while blocks and budget allow; false when one is
  // left waiting (then nobody new is admitted).
  bool resume_swapped(StepPlan& plan, int32_t& budget);
  // The blocks after `hit` that the lower tiers hold, by hash, up to the first one they lack.
  std::vector<BlockHash> lower_prefix(const Sequence& seq, const PrefixHit& hit) const;
  // Takes `seq` out of the plan: its tokens, and copies into its blocks.
  void unschedule(Sequence* seq, StepPlan& plan, int32_t& budget);

  SchedulerOptions options_;
  KvCacheManager* kv_;
  const SwapSpace* swap_;
  int32_t swap_reserved_ = 0;  // blocks this step's swap_out will take from swap_
  std::deque<Sequence*> waiting_;
  std::deque<Sequence*> running_;  // in admission order
  std::deque<Sequence*> swapped_;  // oldest first
};

}  // namespace tierserve

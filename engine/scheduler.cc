#include "engine/scheduler.h"

#include <algorithm>

#include "common/check.h"

namespace tierserve {

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* kv, const SwapSpace* swap)
    : options_(options), kv_(kv), swap_(swap) {
  TS_CHECK(options.max_num_seqs > 0 && options.max_num_batched_tokens > 0 &&
           options.max_model_len > 0)
      << "scheduler limits";
}

Status Scheduler::check_fits(int32_t prompt_tokens, int32_t max_tokens) const {
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_tokens;
  if (total > options_.max_model_len) {
    return invalid_argument("this model's maximum context length is " +
                            std::to_string(options_.max_model_len) + " tokens, but " +
                            std::to_string(total) + " were requested (" +
                            std::to_string(prompt_tokens) + " in the prompt, " +
                            std::to_string(max_tokens) + " to generate)");
  }
  const int64_t bs = kv_->block_size();
  const int64_t usable = kv_->num_blocks() - kv_->options().watermark_blocks;
  if ((total + bs - 1) / bs > usable) {
    return invalid_argument("the request needs " + std::to_string(total) +
                            " tokens of KV cache, but the whole cache holds " +
                            std::to_string(usable * bs) + " (" + std::to_string(prompt_tokens) +
                            " in the prompt, " + std::to_string(max_tokens) + " to generate)");
  }
  return Status::ok();
}

void Scheduler::add(Sequence* seq) {
  TS_CHECK(seq->status == SequenceStatus::kWaiting && seq->kv.table.blocks().empty())
      << "sequence " << seq->id << " added twice";
  waiting_.push_back(seq);
}

void Scheduler::fork(const Sequence& parent, Sequence* child) {
  TS_CHECK(parent.status == SequenceStatus::kRunning) << "fork of a sequence that is not running";
  kv_->fork(parent.kv, child->kv);
  child->num_computed = parent.num_computed;
  child->status = SequenceStatus::kRunning;
  running_.push_back(child);
}

void Scheduler::unschedule(Sequence* seq, StepPlan& plan, int32_t& budget) {
  auto it = std::find_if(plan.scheduled.begin(), plan.scheduled.end(),
                         [seq](const ScheduledSequence& s) { return s.seq == seq; });
  if (it == plan.scheduled.end()) return;
  budget += it->num_tokens;
  plan.num_tokens -= it->num_tokens;
  plan.scheduled.erase(it);
  const std::vector<int32_t>& own = seq->kv.table.blocks();
  plan.copies.erase(std::remove_if(plan.copies.begin(), plan.copies.end(),
                                   [&own](const BlockCopy& c) {
                                     return std::find(own.begin(), own.end(), c.dst) != own.end();
                                   }),
                    plan.copies.end());
}

void Scheduler::preempt(Sequence* victim, StepPlan& plan, int32_t& budget) {
  const int32_t bs = kv_->block_size();
  const int32_t computed_blocks = (victim->num_computed + bs - 1) / bs;
  const bool swap = swap_ != nullptr && computed_blocks > 0 &&
                    computed_blocks <= swap_->num_free_swap_blocks() - swap_reserved_;
  if (swap) {
    // The blocks holding its computed tokens as they are now: where this step gave the victim
    // a copy-on-write block, the content is still in the copy's source.
    SwapOut out{victim, {}};
    const std::vector<int32_t>& table = victim->kv.table.blocks();
    for (int32_t i = 0; i < computed_blocks; ++i) {
      int32_t b = table[static_cast<size_t>(i)];
      for (const BlockCopy& c : plan.copies) {
        if (c.dst == b) b = c.src;
      }
      out.blocks.push_back(b);
    }
    swap_reserved_ += computed_blocks;
    plan.swap_out.push_back(std::move(out));
  }
  unschedule(victim, plan, budget);
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  kv_->free(victim->kv);
  ++victim->num_preemptions;
  plan.preempted.push_back(victim);
  if (swap) {
    victim->status = SequenceStatus::kSwapped;
    swapped_.push_front(victim);  // victims go newest first, so older ones end up in front
  } else {
    victim->num_computed = 0;
    victim->status = SequenceStatus::kWaiting;
    waiting_.push_front(victim);
  }
}

void Scheduler::recompute(Sequence* seq, StepPlan& plan) {
  int32_t budget = 0;
  unschedule(seq, plan, budget);
  plan.swap_in.erase(std::remove_if(plan.swap_in.begin(), plan.swap_in.end(),
                                    [seq](const SwapIn& s) { return s.seq == seq; }),
                     plan.swap_in.end());
  plan.restores.erase(std::remove_if(plan.restores.begin(), plan.restores.end(),
                                     [seq](const PrefixRestore& r) { return r.seq == seq; }),
                      plan.restores.end());
  for (std::deque<Sequence*>* q : {&running_, &swapped_, &waiting_}) {
    auto it = std::find(q->begin(), q->end(), seq);
    if (it != q->end()) q->erase(it);
  }
  kv_->free(seq->kv);
  seq->num_computed = 0;
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_front(seq);
}

bool Scheduler::resume_swapped(StepPlan& plan, int32_t& budget) {
  const int32_t bs = kv_->block_size();
  while (!swapped_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
    Sequence* seq = swapped_.front();
    // Blocks still cached on the device need no copy; the hit never covers more than the
    // computed tokens.
    PrefixHit hit = kv_->find_cached_prefix(seq->tokens.data(), seq->num_computed);
    const int32_t n = std::min(seq->num_uncomputed(), budget);
    if (!kv_->can_admit(hit, seq->num_computed + n)) return false;
    kv_->admit(seq->kv, hit, seq->num_computed + n);
    SwapIn in{seq, static_cast<int32_t>(hit.blocks.size()), {}};
    const int32_t computed_blocks = (seq->num_computed + bs - 1) / bs;
    TS_CHECK_EQ(static_cast<int32_t>(seq->swap_slots.size()), computed_blocks)
        << "sequence " << seq->id << " swap slots";
    const std::vector<int32_t>& table = seq->kv.table.blocks();
    in.blocks.assign(table.begin() + in.first_slot, table.begin() + computed_blocks);
    plan.swap_in.push_back(std::move(in));
    seq->status = SequenceStatus::kRunning;
    swapped_.pop_front();
    running_.push_back(seq);
    plan.scheduled.push_back({seq, n});
    plan.num_tokens += n;
    budget -= n;
  }
  return swapped_.empty();
}

bool Scheduler::reserve(Sequence* seq, int32_t n, StepPlan& plan, int32_t& budget) {
  const int32_t total = seq->num_computed + n;
  while (!kv_->can_append(seq->kv, total)) {
    Sequence* victim = running_.back();
    preempt(victim, plan, budget);
    if (victim == seq) return false;
  }
  kv_->append(seq->kv, total, &plan.copies);
  return true;
}

std::vector<BlockHash> Scheduler::lower_prefix(const Sequence& seq, const PrefixHit& hit) const {
  std::vector<BlockHash> lower;
  if (swap_ == nullptr || !kv_->prefix_caching()) return lower;
  const int32_t bs = kv_->block_size();
  BlockHash parent = hit.hashes.empty() ? kv_->root_hash() : hit.hashes.back();
  // Whole blocks, always leaving the last token to compute (as find_cached_prefix does).
  for (int32_t i = static_cast<int32_t>(hit.blocks.size()); (i + 1) * bs < seq.num_tokens(); ++i) {
    const BlockHash h = hash_block(parent, seq.tokens.data() + static_cast<size_t>(i) * bs, bs);
    if (!swap_->has_prefix_block(h)) break;
    lower.push_back(h);
    parent = h;
  }
  return lower;
}

void Scheduler::admit_waiting(StepPlan& plan, int32_t& budget) {
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    const PrefixHit hit = kv_->find_cached_prefix(seq->tokens.data(), seq->num_tokens());
    const std::vector<BlockHash> lower = lower_prefix(*seq, hit);
    const int32_t cached = hit.num_tokens + static_cast<int32_t>(lower.size()) * kv_->block_size();
    const int32_t n = std::min(seq->num_tokens() - cached, budget);
    if (!kv_->can_admit(hit, cached + n)) break;
    kv_->admit(seq->kv, hit, cached + n);
    if (!lower.empty()) {
      const std::vector<int32_t>& table = seq->kv.table.blocks();
      const auto first = table.begin() + static_cast<ptrdiff_t>(hit.blocks.size());
      plan.restores.push_back(
          {seq, lower, std::vector<int32_t>(first, first + static_cast<ptrdiff_t>(lower.size()))});
    }
    if (seq->num_preemptions == 0) seq->num_cached_tokens = cached;
    seq->num_computed = cached;
    seq->status = SequenceStatus::kRunning;
    waiting_.pop_front();
    running_.push_back(seq);
    plan.scheduled.push_back({seq, n});
    plan.num_tokens += n;
    budget -= n;
  }
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int32_t budget = options_.max_num_batched_tokens;
  // Decodes, then unfinished prefills, each oldest first. Iterate over a snapshot: preemption
  // removes sequences from running_.
  const std::vector<Sequence*> running(running_.begin(), running_.end());
  for (bool decodes : {true, false}) {
    for (Sequence* seq : running) {
      // Forks can make more running sequences than max_num_seqs; a step still runs at most that.
      if (budget == 0 || static_cast<int32_t>(plan.scheduled.size()) >= options_.max_num_seqs) {
        break;
      }
      if (seq->status != SequenceStatus::kRunning) continue;  // preempted in this step
      const int32_t left = seq->num_uncomputed();
      if (left == 0 || (left == 1) != decodes) continue;
      const int32_t n = std::min(left, budget);
      if (!reserve(seq, n, plan, budget)) continue;
      plan.scheduled.push_back({seq, n});
      plan.num_tokens += n;
      budget -= n;
    }
  }
  if (plan.preempted.empty() && resume_swapped(plan, budget)) admit_waiting(plan, budget);
  plan.spills = kv_->take_evictions();
  swap_reserved_ = 0;  // the engine carries out this step's swaps before the next schedule()
  return plan;
}

void Scheduler::update(const StepPlan& plan) {
  for (const ScheduledSequence& s : plan.scheduled) {
    Sequence* seq = s.seq;
    seq->num_computed += s.num_tokens;
    TS_CHECK_LE(seq->num_computed, seq->num_tokens());
    kv_->cache_blocks(seq->kv, seq->tokens.data(), seq->num_computed);
  }
}

void Scheduler::finish(Sequence* seq) {
  auto& queue = seq->status == SequenceStatus::kRunning   ? running_
                : seq->status == SequenceStatus::kSwapped ? swapped_
                                                          : waiting_;
  auto it = std::find(queue.begin(), queue.end(), seq);
  if (it != queue.end()) queue.erase(it);
  kv_->free(seq->kv);
  seq->status = SequenceStatus::kFinished;
}

}  // namespace tierserve

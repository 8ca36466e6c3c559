#include "engine/scheduler.h"

#include <algorithm>

#include "common/check.h"

namespace tierserve {

Scheduler::Scheduler(const SchedulerOptions& options, KvCacheManager* kv)
    : options_(options), kv_(kv) {
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

void Scheduler::preempt(Sequence* victim, StepPlan& plan, int32_t& budget) {
  // Undo anything this step already gave the victim.
  auto it = std::find_if(plan.scheduled.begin(), plan.scheduled.end(),
                         [victim](const ScheduledSequence& s) { return s.seq == victim; });
  if (it != plan.scheduled.end()) {
    budget += it->num_tokens;
    plan.num_tokens -= it->num_tokens;
    plan.scheduled.erase(it);
    const std::vector<int32_t>& own = victim->kv.table.blocks();
    plan.copies.erase(std::remove_if(plan.copies.begin(), plan.copies.end(),
                                     [&own](const BlockCopy& c) {
                                       return std::find(own.begin(), own.end(), c.dst) != own.end();
                                     }),
                      plan.copies.end());
  }
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  kv_->free(victim->kv);
  victim->num_computed = 0;
  victim->status = SequenceStatus::kWaiting;
  ++victim->num_preemptions;
  waiting_.push_front(victim);
  plan.preempted.push_back(victim);
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

void Scheduler::admit_waiting(StepPlan& plan, int32_t& budget) {
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    const PrefixHit hit = kv_->find_cached_prefix(seq->tokens.data(), seq->num_tokens());
    const int32_t n = std::min(seq->num_tokens() - hit.num_tokens, budget);
    if (!kv_->can_admit(hit, hit.num_tokens + n)) break;
    kv_->admit(seq->kv, hit, hit.num_tokens + n);
    if (seq->num_preemptions == 0) seq->num_cached_tokens = hit.num_tokens;
    seq->num_computed = hit.num_tokens;
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
  if (plan.preempted.empty()) admit_waiting(plan, budget);
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
  auto& queue = seq->status == SequenceStatus::kRunning ? running_ : waiting_;
  auto it = std::find(queue.begin(), queue.end(), seq);
  if (it != queue.end()) queue.erase(it);
  kv_->free(seq->kv);
  seq->status = SequenceStatus::kFinished;
}

}  // namespace tierserve

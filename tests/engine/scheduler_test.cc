// Scheduler, driven by a fake runner that plays the engine: it runs each plan against a model of
// the KV bytes, samples deterministic tokens, finishes sequences, and checks the scheduler's and
// the KV metadata's invariants after every step.
#include "engine/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "memory/block_hash.h"

namespace tierserve {
namespace {

using ::testing::HasSubstr;

constexpr char kSalt[] = "fake-model";

KvCacheOptions kv_options(int32_t num_blocks, int32_t block_size, int32_t watermark = 0,
                          bool caching = true) {
  KvCacheOptions o;
  o.num_blocks = num_blocks;
  o.block_size = block_size;
  o.watermark_blocks = watermark;
  o.enable_prefix_caching = caching;
  o.salt = kSalt;
  return o;
}

SchedulerOptions sched_options(int32_t max_num_seqs, int32_t max_num_batched_tokens,
                               int32_t max_model_len) {
  SchedulerOptions o;
  o.max_num_seqs = max_num_seqs;
  o.max_num_batched_tokens = max_num_batched_tokens;
  o.max_model_len = max_model_len;
  return o;
}

std::vector<int32_t> tokens_from(int32_t first, int32_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Swap space of a fixed number of blocks.
class FakeSwapSpace : public SwapSpace {
 public:
  explicit FakeSwapSpace(int32_t capacity) : capacity_(capacity) {}
  int32_t num_free_swap_blocks() const override { return capacity_ - used; }
  bool has_prefix_block(const BlockHash& hash) const override { return prefix.count(hash) > 0; }
  int32_t used = 0;
  std::map<BlockHash, std::vector<int64_t>> prefix;  // spilled blocks' contents (unbounded)

 private:
  int32_t capacity_;
};

// What the engine does around the scheduler, with a model of the KV pool's bytes in place of the
// model: every slot holds the (token, position) whose K/V were last written there. With
// `swap_blocks` > 0 it also plays the KV swapper: swapped-out blocks' contents are kept aside and
// written back into the blocks the plan's swap_in names, so a wrong swap plan shows up as stale
// K/V read by the next forward.
class FakeEngine {
 public:
  FakeEngine(const SchedulerOptions& so, const KvCacheOptions& ko, int32_t swap_blocks = 0)
      : options_(so),
        kv_(recording(ko, swap_blocks > 0)),
        swap_(swap_blocks),
        scheduler_(so, &kv_, swap_blocks > 0 ? &swap_ : nullptr),
        bs_(ko.block_size),
        pool_(static_cast<size_t>(ko.num_blocks) * static_cast<size_t>(ko.block_size), -1) {}

  static KvCacheOptions recording(KvCacheOptions o, bool record) {
    o.record_evictions = record;
    return o;
  }
  int64_t num_swap_outs() const { return num_swap_outs_; }
  int64_t num_restored_blocks() const { return num_restored_blocks_; }
  int64_t num_swap_ins() const { return num_swap_ins_; }

  Scheduler& scheduler() { return scheduler_; }
  const KvCacheManager& kv() const { return kv_; }
  int64_t num_copies() const { return num_copies_; }
  int64_t num_preemptions() const { return num_preemptions_; }
  // Sequences in the order they were admitted (again after a preemption).
  const std::vector<Sequence*>& admissions() const { return admissions_; }

  // Queues a new sequence, as the engine does after check_fits.
  Sequence* add(std::vector<int32_t> prompt, int32_t max_tokens, int32_t forks = 0) {
    auto owned = std::make_unique<Sequence>(next_id_++, bs_);
    Sequence* seq = owned.get();
    seq->prompt_len = static_cast<int32_t>(prompt.size());
    seq->tokens = std::move(prompt);
    seq->max_tokens = max_tokens;
    EXPECT_TRUE(scheduler_.check_fits(seq->prompt_len, max_tokens).is_ok());
    seqs_.push_back(std::move(owned));
    family_[seq] = seq->id;
    forks_[seq] = forks;
    scheduler_.add(seq);
    waiting_model_.push_back(seq);
    return seq;
  }

  // Aborts a sequence wherever it is.
  void abort(Sequence* seq) {
    if (seq->status == SequenceStatus::kSwapped) {
      swap_.used -= static_cast<int32_t>(seq->swap_slots.size());
      seq->swap_slots.clear();
      swapped_.erase(seq);
      swapped_model_.erase(std::remove(swapped_model_.begin(), swapped_model_.end(), seq),
                           swapped_model_.end());
    }
    scheduler_.finish(seq);
    waiting_model_.erase(std::remove(waiting_model_.begin(), waiting_model_.end(), seq),
                         waiting_model_.end());
    EXPECT_EQ(seq->status, SequenceStatus::kFinished);
    EXPECT_TRUE(seq->kv.table.blocks().empty());
  }

  Sequence* find(int64_t id) const {
    for (const auto& s : seqs_) {
      if (s->id == id) return s.get();
    }
    return nullptr;
  }

  std::vector<Sequence*> live() const {
    std::vector<Sequence*> out;
    for (const auto& s : seqs_) {
      if (s->status != SequenceStatus::kFinished) out.push_back(s.get());
    }
    return out;
  }

  // One engine step: schedule, check, run the fake forward, update, sample, finish.
  StepPlan step() {
    std::map<Sequence*, SequenceStatus> before;
    for (Sequence* s : live()) before[s] = s->status;
    const bool had_work = scheduler_.has_work();
    StepPlan plan = scheduler_.schedule();
    EXPECT_TRUE(!had_work || !plan.empty()) << "a step with work scheduled nothing";
    check_plan(plan, before);
    check_kv();
    apply_swaps(plan);
    forward(plan);
    scheduler_.update(plan);
    check_hashes();
    for (const ScheduledSequence& s : plan.scheduled) {
      if (s.seq->status == SequenceStatus::kRunning && s.seq->num_uncomputed() == 0) sample(s.seq);
    }
    check_kv();
    ++num_steps_;
    return plan;
  }

  // Steps until nothing is left; fails the test after `max_steps`.
  int run(int max_steps) {
    int steps = 0;
    while (scheduler_.has_work()) {
      if (::testing::Test::HasFatalFailure()) return steps;
      if (++steps > max_steps) {
        ADD_FAILURE() << "no progress after " << max_steps << " steps";
        return steps;
      }
      step();
    }
    check_drained();
    return steps;
  }

  // After every sequence finished or was aborted: nothing is held.
  void check_drained() const {
    EXPECT_EQ(scheduler_.num_waiting(), 0);
    EXPECT_EQ(scheduler_.num_running(), 0);
    EXPECT_EQ(scheduler_.num_swapped(), 0);
    EXPECT_EQ(swap_.used, 0);
    EXPECT_EQ(kv_.num_used_blocks(), 0);
    EXPECT_EQ(kv_.num_free_blocks(), kv_.num_blocks());
    for (int32_t b = 0; b < kv_.num_blocks(); ++b) EXPECT_EQ(kv_.allocator().ref_count(b), 0);
    for (const auto& s : seqs_) EXPECT_EQ(s->status, SequenceStatus::kFinished);
  }

 private:
  // Spills and outs (the blocks' contents set aside), then ins and restores (written into the
  // new blocks).
  void apply_swaps(const StepPlan& plan) {
    const size_t bs = static_cast<size_t>(bs_);
    for (const EvictedBlock& e : plan.spills) {
      auto first = pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(e.block) * bs);
      swap_.prefix[e.hash] = std::vector<int64_t>(first, first + static_cast<ptrdiff_t>(bs));
    }
    for (const SwapOut& out : plan.swap_out) {
      std::vector<int64_t>& saved = swapped_[out.seq];
      saved.clear();
      for (int32_t b : out.blocks) {
        auto first = pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(b) * bs);
        saved.insert(saved.end(), first, first + static_cast<ptrdiff_t>(bs));
      }
      out.seq->swap_slots.assign(out.blocks.size(), SwapSlot{});
      swap_.used += static_cast<int32_t>(out.blocks.size());
      ASSERT_GE(swap_.num_free_swap_blocks(), 0) << "swap space overcommitted";
      ++num_swap_outs_;
    }
    for (const SwapIn& in : plan.swap_in) {
      auto it = swapped_.find(in.seq);
      ASSERT_NE(it, swapped_.end()) << "swap-in of " << in.seq->id << ", never swapped out";
      ASSERT_EQ(static_cast<size_t>(in.first_slot) + in.blocks.size(), in.seq->swap_slots.size());
      for (size_t i = 0; i < in.blocks.size(); ++i) {
        std::copy_n(it->second.begin() + static_cast<ptrdiff_t>((in.first_slot + i) * bs), bs,
                    pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(in.blocks[i]) * bs));
      }
      swap_.used -= static_cast<int32_t>(in.seq->swap_slots.size());
      in.seq->swap_slots.clear();
      swapped_.erase(it);
      ++num_swap_ins_;
    }
    for (const PrefixRestore& r : plan.restores) {
      ASSERT_EQ(r.hashes.size(), r.blocks.size());
      for (size_t i = 0; i < r.blocks.size(); ++i) {
        auto it = swap_.prefix.find(r.hashes[i]);
        ASSERT_NE(it, swap_.prefix.end()) << "restore of a block never spilled";
        std::copy(it->second.begin(), it->second.end(),
                  pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(r.blocks[i]) * bs));
        EXPECT_EQ(kv_.allocator().ref_count(r.blocks[i]), 1) << "restore into a shared block";
      }
      num_restored_blocks_ += static_cast<int64_t>(r.blocks.size());
    }
  }

  static int64_t content(int32_t token, int32_t position) {
    return (static_cast<int64_t>(token) << 32) | static_cast<int64_t>(position);
  }
  // A deterministic "sampled" token: different sequences diverge.
  static int32_t fake_token(const Sequence& s) {
    return static_cast<int32_t>((s.id * 7919 + s.num_tokens() * 31) % 1000) + 2000;
  }

  void sample(Sequence* seq) {
    int32_t& forks = forks_[seq];
    if (forks > 0 && seq->num_output() == 0) {
      // Parallel sampling: children share the prompt's blocks and sample their own first token.
      for (; forks > 0; --forks) {
        auto owned = std::make_unique<Sequence>(next_id_++, bs_);
        Sequence* child = owned.get();
        child->tokens = seq->tokens;
        child->prompt_len = seq->prompt_len;
        child->max_tokens = seq->max_tokens;
        child->num_computed = seq->num_computed;
        seqs_.push_back(std::move(owned));
        family_[child] = family_[seq];
        forks_[child] = 0;
        scheduler_.fork(*seq, child);
        EXPECT_EQ(child->status, SequenceStatus::kRunning);
        EXPECT_EQ(child->kv.table.blocks(), seq->kv.table.blocks());
        stamp_[child] = next_stamp_++;
        emit(child);
      }
    }
    emit(seq);
  }

  void emit(Sequence* seq) {
    seq->tokens.push_back(fake_token(*seq));
    if (seq->num_output() >= seq->max_tokens) {
      scheduler_.finish(seq);
      EXPECT_TRUE(seq->kv.table.blocks().empty());
    }
  }

  void check_plan(const StepPlan& plan, const std::map<Sequence*, SequenceStatus>& before) {
    // Limits.
    int32_t sum = 0;
    std::set<Sequence*> scheduled;
    for (const ScheduledSequence& s : plan.scheduled) {
      sum += s.num_tokens;
      EXPECT_GT(s.num_tokens, 0);
      EXPECT_TRUE(scheduled.insert(s.seq).second) << "sequence " << s.seq->id << " twice";
      EXPECT_EQ(s.seq->status, SequenceStatus::kRunning);
      EXPECT_LE(s.seq->num_computed + s.num_tokens, s.seq->num_tokens());
      n_scheduled_[s.seq] = s.num_tokens;
    }
    EXPECT_EQ(plan.num_tokens, sum);
    EXPECT_LE(plan.num_tokens, options_.max_num_batched_tokens);
    EXPECT_LE(static_cast<int32_t>(plan.scheduled.size()), options_.max_num_seqs);

    // Resumptions: the front of the swapped queue, in order, before anyone new is admitted
    // (so they were pushed to the running queue first).
    for (const SwapIn& in : plan.swap_in) {
      EXPECT_EQ(before.at(in.seq), SequenceStatus::kSwapped);
      EXPECT_EQ(in.seq->status, SequenceStatus::kRunning);
      ASSERT_FALSE(swapped_model_.empty());
      EXPECT_EQ(swapped_model_.front(), in.seq) << "resumed out of order: " << in.seq->id;
      swapped_model_.pop_front();
      stamp_[in.seq] = next_stamp_++;
      const std::vector<int32_t>& table = in.seq->kv.table.blocks();
      for (size_t i = 0; i < in.blocks.size(); ++i) {
        EXPECT_EQ(table[static_cast<size_t>(in.first_slot) + i], in.blocks[i]);
        EXPECT_EQ(kv_.allocator().ref_count(in.blocks[i]), 1) << "swap-in into a shared block";
      }
    }
    // Admissions: a prefix of the waiting queue, in order, and only in steps without preemption.
    std::vector<Sequence*> admitted;
    for (const ScheduledSequence& s : plan.scheduled) {
      if (before.at(s.seq) == SequenceStatus::kWaiting) admitted.push_back(s.seq);
    }
    EXPECT_TRUE(plan.preempted.empty() || admitted.empty()) << "admitted while preempting";
    for (Sequence* seq : admitted) {
      ASSERT_FALSE(waiting_model_.empty());
      EXPECT_EQ(waiting_model_.front(), seq) << "admission out of order: " << seq->id;
      waiting_model_.pop_front();
      admissions_.push_back(seq);
      stamp_[seq] = next_stamp_++;
      // num_computed is the prefix hit: whole blocks, never the last token.
      EXPECT_EQ(seq->num_computed % bs_, 0);
      EXPECT_LT(seq->num_computed, seq->num_tokens());
      EXPECT_TRUE(kv_.prefix_caching() || seq->num_computed == 0);
      EXPECT_TRUE(seq->num_computed + n_scheduled_[seq] == seq->num_tokens() ||
                  plan.num_tokens == options_.max_num_batched_tokens)
          << "a chunk smaller than both the prompt and the budget";
    }

    EXPECT_TRUE(admitted.empty() || swapped_model_.empty()) << "admitted while others are swapped";
    // Preemption: the most recently admitted first, by swapping when there is room (then to the
    // swapped queue, keeping what was computed), else by recompute, back to the queue's front.
    for (const SwapOut& out : plan.swap_out) {
      EXPECT_EQ(out.seq->status, SequenceStatus::kSwapped);
      EXPECT_EQ(static_cast<int32_t>(out.blocks.size()), (out.seq->num_computed + bs_ - 1) / bs_);
    }
    for (Sequence* victim : plan.preempted) {
      EXPECT_EQ(before.at(victim), SequenceStatus::kRunning);
      if (victim->status == SequenceStatus::kSwapped) {
        EXPECT_GT(victim->num_computed, 0);
        EXPECT_TRUE(victim->kv.table.blocks().empty());
        EXPECT_EQ(scheduled.count(victim), 0u);
        swapped_model_.push_front(victim);
        ++num_preemptions_;
        continue;
      }
      EXPECT_EQ(victim->status, SequenceStatus::kWaiting);
      EXPECT_EQ(victim->num_computed, 0);
      EXPECT_TRUE(victim->kv.table.blocks().empty());
      EXPECT_TRUE(victim->kv.hashes.empty());
      EXPECT_EQ(scheduled.count(victim), 0u);
      waiting_model_.push_front(victim);
      ++num_preemptions_;
    }
    for (Sequence* s : live()) {
      if (s->status != SequenceStatus::kRunning) continue;
      for (Sequence* victim : plan.preempted) {
        EXPECT_LT(stamp_[s], stamp_[victim])
            << "preempted " << victim->id << " while a younger " << s->id << " runs";
      }
    }
    // The queues.
    int32_t running = 0;
    int32_t waiting = 0;
    for (Sequence* s : live()) {
      if (s->status == SequenceStatus::kRunning) ++running;
      if (s->status != SequenceStatus::kWaiting) continue;
      ++waiting;
      EXPECT_TRUE(s->kv.table.blocks().empty());
      EXPECT_EQ(s->num_computed, 0);
      EXPECT_NE(std::find(waiting_model_.begin(), waiting_model_.end(), s), waiting_model_.end());
    }
    EXPECT_EQ(scheduler_.num_running(), running);
    EXPECT_EQ(scheduler_.num_waiting(), waiting);
    EXPECT_EQ(scheduler_.num_swapped(), static_cast<int32_t>(swapped_model_.size()));
    EXPECT_EQ(static_cast<int32_t>(waiting_model_.size()), waiting);

    // Each running sequence holds blocks for exactly what is computed plus what runs now.
    for (Sequence* s : live()) {
      if (s->status != SequenceStatus::kRunning) continue;
      const int32_t n = scheduled.count(s) ? n_scheduled_[s] : 0;
      EXPECT_EQ(s->kv.table.num_tokens(), s->num_computed + n) << "sequence " << s->id;
      EXPECT_EQ(static_cast<int32_t>(s->kv.table.blocks().size()),
                s->kv.table.blocks_for(s->num_computed + n))
          << "sequence " << s->id;
    }

    // Copy-on-write: every block written this step is private; each copy's destination is the
    // block its sequence writes next.
    for (const ScheduledSequence& s : plan.scheduled) {
      const std::vector<int32_t>& blocks = s.seq->kv.table.blocks();
      for (int32_t p = s.seq->num_computed; p < s.seq->num_computed + s.num_tokens; ++p) {
        EXPECT_EQ(kv_.allocator().ref_count(blocks[static_cast<size_t>(p / bs_)]), 1)
            << "sequence " << s.seq->id << " writes a shared block at " << p;
      }
    }
    for (const BlockCopy& c : plan.copies) {
      EXPECT_NE(c.src, c.dst);
      bool found = false;
      for (const ScheduledSequence& s : plan.scheduled) {
        const std::vector<int32_t>& blocks = s.seq->kv.table.blocks();
        const size_t i = static_cast<size_t>(s.seq->num_computed / bs_);
        found =
            found || (s.seq->num_computed % bs_ != 0 && i < blocks.size() && blocks[i] == c.dst);
      }
      EXPECT_TRUE(found) << "copy to block " << c.dst << ", which no scheduled sequence writes";
    }
    num_copies_ += static_cast<int64_t>(plan.copies.size());
  }

  // Ref counts and sharing, from the sequences' tables alone.
  void check_kv() {
    std::map<int32_t, std::vector<std::pair<Sequence*, int32_t>>> holders;  // block -> (seq, index)
    for (Sequence* s : live()) {
      const std::vector<int32_t>& blocks = s->kv.table.blocks();
      for (size_t i = 0; i < blocks.size(); ++i) {
        holders[blocks[i]].push_back({s, static_cast<int32_t>(i)});
      }
    }
    for (int32_t b = 0; b < kv_.num_blocks(); ++b) {
      auto it = holders.find(b);
      const int32_t users = it == holders.end() ? 0 : static_cast<int32_t>(it->second.size());
      ASSERT_EQ(kv_.allocator().ref_count(b), users) << "block " << b;
    }
    ASSERT_EQ(kv_.num_used_blocks(), static_cast<int32_t>(holders.size()));
    for (const auto& [block, users] : holders) {
      if (users.size() < 2) continue;
      const auto [first, index] = users[0];
      for (const auto& [s, i] : users) {
        // Shared only through a prefix hit (a cached block) or a fork, at the same position and
        // after the same tokens.
        EXPECT_EQ(i, index) << "block " << block << " at two positions";
        if (family_[s] != family_[first]) {
          EXPECT_TRUE(kv_.prefix_cache().contains(block))
              << "block " << block << " shared by unrelated " << s->id << " and " << first->id;
        }
        const int32_t end = std::min({s->num_computed, first->num_computed, (i + 1) * bs_});
        EXPECT_TRUE(std::equal(s->tokens.begin(), s->tokens.begin() + end, first->tokens.begin()))
            << "block " << block << " shared by " << s->id << " and " << first->id
            << " with different tokens";
      }
    }
  }

  // The hashes a sequence has recorded are its tokens' chain, and every cached block a sequence
  // holds is registered under that sequence's hash for it.
  void check_hashes() {
    for (Sequence* s : live()) {
      if (s->status != SequenceStatus::kRunning) continue;
      std::vector<BlockHash>& chain = chains_[s];
      const size_t n = s->kv.hashes.size();
      while (chain.size() < n) {
        const BlockHash parent = chain.empty() ? hash_salt(kSalt) : chain.back();
        chain.push_back(hash_block(parent, s->tokens.data() + chain.size() * bs_, bs_));
      }
      EXPECT_LE(static_cast<int32_t>(n) * bs_, s->num_computed);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(s->kv.hashes[i], chain[i]) << "sequence " << s->id;
      const std::vector<int32_t>& blocks = s->kv.table.blocks();
      for (size_t i = 0; i < blocks.size(); ++i) {
        if (!kv_.prefix_cache().contains(blocks[i])) continue;
        ASSERT_LT(i, n) << "sequence " << s->id << " holds cached block " << blocks[i]
                        << " beyond its computed full blocks";
        EXPECT_EQ(kv_.prefix_cache().hash_of(blocks[i]), chain[i]);
      }
    }
  }

  // Copies, then attention reads of every computed token, then K/V writes of the new ones.
  void forward(const StepPlan& plan) {
    const size_t bs = static_cast<size_t>(bs_);
    for (const BlockCopy& c : plan.copies) {
      std::copy_n(pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(c.src) * bs), bs,
                  pool_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(c.dst) * bs));
    }
    for (const ScheduledSequence& s : plan.scheduled) {
      const Sequence& seq = *s.seq;
      for (int32_t p = 0; p < seq.num_computed; ++p) {
        const int64_t got = pool_[static_cast<size_t>(seq.kv.table.slot(p))];
        ASSERT_EQ(got, content(seq.tokens[static_cast<size_t>(p)], p))
            << "sequence " << seq.id << " reads stale K/V at position " << p << " (step "
            << num_steps_ << ")";
      }
    }
    for (const ScheduledSequence& s : plan.scheduled) {
      const Sequence& seq = *s.seq;
      for (int32_t p = seq.num_computed; p < seq.num_computed + s.num_tokens; ++p) {
        pool_[static_cast<size_t>(seq.kv.table.slot(p))] =
            content(seq.tokens[static_cast<size_t>(p)], p);
      }
    }
  }

  SchedulerOptions options_;
  KvCacheManager kv_;
  FakeSwapSpace swap_;
  Scheduler scheduler_;
  int32_t bs_;
  std::vector<int64_t> pool_;  // per slot: content(token, position) last written, or -1
  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::map<Sequence*, int64_t> family_;  // the sequence it was forked from, or itself
  std::map<Sequence*, int32_t> forks_;   // children to fork when its prompt is done
  std::map<Sequence*, int64_t> stamp_;   // when last admitted (or forked)
  std::map<Sequence*, int32_t> n_scheduled_;
  std::map<Sequence*, std::vector<BlockHash>> chains_;
  std::deque<Sequence*> waiting_model_;                // what the waiting queue must be
  std::deque<Sequence*> swapped_model_;                // what the swapped queue must be
  std::map<Sequence*, std::vector<int64_t>> swapped_;  // swapped-out contents, per sequence
  int64_t num_swap_outs_ = 0;
  int64_t num_swap_ins_ = 0;
  int64_t num_restored_blocks_ = 0;
  std::vector<Sequence*> admissions_;
  int64_t next_id_ = 1;
  int64_t next_stamp_ = 0;
  int64_t num_steps_ = 0;
  int64_t num_copies_ = 0;
  int64_t num_preemptions_ = 0;
};

std::vector<std::pair<int64_t, int32_t>> summary(const StepPlan& plan) {
  std::vector<std::pair<int64_t, int32_t>> out;
  for (const ScheduledSequence& s : plan.scheduled) out.push_back({s.seq->id, s.num_tokens});
  return out;
}
using Summary = std::vector<std::pair<int64_t, int32_t>>;

TEST(SchedulerTest, TokenBudgetChunksLongPrompts) {
  FakeEngine e(sched_options(8, 8, 64), kv_options(64, 4));
  Sequence* a = e.add(tokens_from(0, 20), 2);
  Sequence* b = e.add(tokens_from(100, 6), 2);
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 8}}));
  EXPECT_EQ(a->num_computed, 8);
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 8}}));
  // a's last chunk leaves room for b's first.
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 4}, {b->id, 4}}));
  EXPECT_EQ(a->num_output(), 1);
  EXPECT_EQ(b->num_output(), 0);
  // a decodes (and finishes), b finishes its prompt.
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 1}, {b->id, 2}}));
  EXPECT_EQ(a->status, SequenceStatus::kFinished);
  EXPECT_EQ(summary(e.step()), (Summary{{b->id, 1}}));
  EXPECT_FALSE(e.scheduler().has_work());
  e.check_drained();
}

TEST(SchedulerTest, MaxNumSeqsLimitsRunningSequences) {
  FakeEngine e(sched_options(2, 512, 64), kv_options(64, 4));
  std::vector<Sequence*> seqs;
  for (int i = 0; i < 5; ++i) seqs.push_back(e.add(tokens_from(10 * i, 4), 3));
  const StepPlan first = e.step();
  EXPECT_EQ(summary(first), (Summary{{seqs[0]->id, 4}, {seqs[1]->id, 4}}));
  EXPECT_EQ(e.scheduler().num_running(), 2);
  EXPECT_EQ(e.scheduler().num_waiting(), 3);
  e.run(100);
  // First come, first served.
  EXPECT_EQ(e.admissions(), seqs);
}

TEST(SchedulerTest, DecodesRunBeforePrefills) {
  FakeEngine e(sched_options(8, 10, 64), kv_options(64, 4));
  Sequence* a = e.add(tokens_from(0, 4), 5);
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 4}}));
  Sequence* b = e.add(tokens_from(100, 30), 2);
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 1}, {b->id, 9}}));
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 1}, {b->id, 9}}));
  e.run(100);
}

TEST(SchedulerTest, ABudgetSmallerThanTheDecodesServesTheOldestFirst) {
  FakeEngine e(sched_options(8, 2, 64), kv_options(64, 4));
  Sequence* a = e.add(tokens_from(0, 2), 4);
  Sequence* b = e.add(tokens_from(10, 2), 4);
  Sequence* c = e.add(tokens_from(20, 2), 4);
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 2}}));
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 1}, {b->id, 1}}));
  EXPECT_EQ(summary(e.step()), (Summary{{a->id, 1}, {b->id, 1}}));
  EXPECT_EQ(c->status, SequenceStatus::kWaiting);
  e.run(100);
}

// Preemption by recompute: the most recently admitted goes, its blocks' cached content stays
// findable (leaves evicted first), and on re-admission its prefix comes from the cache.
TEST(SchedulerTest, PreemptsTheMostRecentlyAdmittedByRecompute) {
  FakeEngine e(sched_options(8, 512, 64), kv_options(7, 4));
  Sequence* a = e.add(tokens_from(0, 8), 4);
  Sequence* b = e.add(tokens_from(100, 8), 4);
  Sequence* d = e.add(tokens_from(200, 9), 4);
  e.step();  // all admitted: 2 + 2 + 3 blocks, and each sampled a token
  EXPECT_EQ(e.kv().num_free_blocks(), 0);
  const std::vector<int32_t> d_blocks = d->kv.table.blocks();
  // a and b each need a block for their 9th token: d is preempted, its uncached partial block
  // and then its cached leaf are reused.
  const StepPlan plan = e.step();
  EXPECT_EQ(summary(plan), (Summary{{a->id, 1}, {b->id, 1}}));
  ASSERT_EQ(plan.preempted, (std::vector<Sequence*>{d}));
  EXPECT_EQ(d->status, SequenceStatus::kWaiting);
  EXPECT_EQ(d->num_computed, 0);
  EXPECT_EQ(d->num_preemptions, 1);
  EXPECT_EQ(d->num_tokens(), 10);  // its output so far is kept, to be recomputed
  EXPECT_EQ(a->kv.table.blocks().back(), d_blocks[2]);
  EXPECT_EQ(b->kv.table.blocks().back(), d_blocks[1]);
  EXPECT_TRUE(e.kv().prefix_cache().contains(d_blocks[0]));
  EXPECT_FALSE(e.kv().prefix_cache().contains(d_blocks[1]));
  // Once a and b are done, d comes back with its first block from the cache.
  const int64_t hits = e.kv().prefix_hit_tokens();
  while (d->status == SequenceStatus::kWaiting) e.step();
  EXPECT_EQ(d->kv.table.blocks()[0], d_blocks[0]);
  EXPECT_EQ(e.kv().prefix_hit_tokens(), hits + 4);
  EXPECT_EQ(d->num_cached_tokens, 0);  // counted at the first admission only
  EXPECT_EQ(d->num_output(), 2);       // recomputed its 10 tokens and sampled the next
  e.run(100);
  EXPECT_EQ(e.admissions(), (std::vector<Sequence*>{a, b, d, d}));
}

// A victim this step already scheduled is taken out of the plan, budget and copies included. The
// one way to get there: forks (younger, decoding) of a sequence whose last prompt chunk shared a
// step with the first chunk of an older-than-them prefill.
TEST(SchedulerTest, APreemptedVictimScheduledThisStepIsUndone) {
  FakeEngine e(sched_options(8, 12, 64), kv_options(6, 4));
  Sequence* p = e.add(tokens_from(0, 6), 4, /*forks=*/2);
  Sequence* a = e.add(tokens_from(100, 20), 2);
  EXPECT_EQ(summary(e.step()), (Summary{{p->id, 6}, {a->id, 6}}));
  Sequence* c1 = e.find(p->id + 2);
  Sequence* c2 = e.find(p->id + 3);
  ASSERT_NE(c1, nullptr);
  ASSERT_NE(c2, nullptr);
  const int32_t shared = p->kv.table.blocks()[1];
  // p and c1 copy the shared partial block, c2 then owns it; a's chunk of 9 needs two more
  // blocks, so c2 and then c1 are preempted, and c1's copy is dropped with it.
  const StepPlan plan = e.step();
  EXPECT_EQ(summary(plan), (Summary{{p->id, 1}, {a->id, 9}}));
  EXPECT_EQ(plan.num_tokens, 10);
  EXPECT_EQ(plan.preempted, (std::vector<Sequence*>{c2, c1}));
  ASSERT_EQ(plan.copies.size(), 1u);
  EXPECT_EQ(plan.copies[0].src, shared);
  EXPECT_EQ(plan.copies[0].dst, p->kv.table.blocks()[1]);
  e.run(200);
  EXPECT_EQ(c1->num_output(), 4);
  EXPECT_EQ(c2->num_output(), 4);
}

TEST(SchedulerTest, ASequenceThatCannotGrowPreemptsItselfLast) {
  FakeEngine e(sched_options(8, 4, 64), kv_options(4, 4));
  Sequence* a = e.add(tokens_from(0, 3), 8);   // 11 tokens: 3 blocks
  Sequence* b = e.add(tokens_from(50, 1), 9);  // 10 tokens: 3 blocks
  e.run(200);
  EXPECT_GE(a->num_preemptions + b->num_preemptions, 1);
  EXPECT_EQ(a->num_preemptions, 0);  // the oldest always progresses
}

TEST(SchedulerTest, AbortOfWaitingAndRunningSequencesFreesEverything) {
  FakeEngine e(sched_options(1, 6, 64), kv_options(16, 4));
  Sequence* a = e.add(tokens_from(0, 20), 4);
  Sequence* b = e.add(tokens_from(100, 5), 4);
  e.step();
  EXPECT_EQ(a->status, SequenceStatus::kRunning);
  EXPECT_EQ(e.kv().num_used_blocks(), 2);
  e.abort(b);  // waiting
  EXPECT_EQ(e.scheduler().num_waiting(), 0);
  e.abort(a);  // running, mid-prefill
  EXPECT_EQ(e.scheduler().num_running(), 0);
  EXPECT_EQ(e.kv().num_used_blocks(), 0);
  EXPECT_FALSE(e.scheduler().has_work());
  // Aborting twice is harmless.
  e.abort(a);
  Sequence* c = e.add(tokens_from(0, 20), 4);
  e.run(100);
  EXPECT_EQ(c->num_output(), 4);
  e.check_drained();
}

TEST(SchedulerTest, AbortOfAPreemptedSequence) {
  FakeEngine e(sched_options(8, 512, 64), kv_options(7, 4));
  e.add(tokens_from(0, 8), 4);
  e.add(tokens_from(100, 8), 4);
  Sequence* d = e.add(tokens_from(200, 9), 4);
  e.step();
  e.step();
  ASSERT_EQ(d->status, SequenceStatus::kWaiting);
  ASSERT_EQ(d->num_preemptions, 1);
  e.abort(d);
  e.run(100);
}

TEST(SchedulerTest, CheckFitsRejectsWhatCanNeverRun) {
  KvCacheManager kv(kv_options(10, 4, /*watermark=*/1));  // 9 usable blocks: 36 tokens
  Scheduler s(sched_options(8, 64, 100), &kv);
  EXPECT_TRUE(s.check_fits(30, 6).is_ok());
  const Status too_long = s.check_fits(90, 11);
  EXPECT_EQ(too_long.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.message(), HasSubstr("maximum context length is 100 tokens"));
  EXPECT_THAT(too_long.message(), HasSubstr("101"));
  const Status too_big = s.check_fits(30, 7);
  EXPECT_EQ(too_big.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("37 tokens"));
  EXPECT_THAT(too_big.message(), HasSubstr("whole cache holds 36"));
  EXPECT_TRUE(s.check_fits(1, 99).code() == StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, ARequestThatFitsAloneAlwaysRuns) {
  // Exactly the usable cache: it runs once everything else is out of the way.
  FakeEngine e(sched_options(8, 16, 64), kv_options(10, 4, /*watermark=*/1));
  Sequence* small = e.add(tokens_from(0, 6), 10);
  Sequence* whole = e.add(tokens_from(100, 30), 6);
  e.run(500);
  EXPECT_EQ(whole->num_output(), 6);
  EXPECT_EQ(small->num_output(), 10);
}

TEST(SchedulerTest, FifoAdmissionDoesNotLetShortRequestsOvertakeALongOne) {
  FakeEngine e(sched_options(8, 512, 64), kv_options(10, 4));
  Sequence* s0 = e.add(tokens_from(0, 20), 10);  // 5 blocks, growing to 8
  e.step();
  Sequence* big = e.add(tokens_from(100, 24), 2);  // 6 blocks: waits for s0
  Sequence* s1 = e.add(tokens_from(200, 4), 2);    // would fit now
  for (int i = 0; i < 3; ++i) {
    e.step();
    EXPECT_EQ(big->status, SequenceStatus::kWaiting);
    EXPECT_EQ(s1->status, SequenceStatus::kWaiting) << "overtook the queue head";
  }
  e.run(100);
  EXPECT_EQ(e.admissions(), (std::vector<Sequence*>{s0, big, s1}));
}

TEST(SchedulerTest, EverySequenceFinishesUnderHeavyContention) {
  FakeEngine e(sched_options(6, 24, 64), kv_options(12, 4, /*watermark=*/1));
  std::mt19937 rng(3);
  std::vector<Sequence*> seqs;
  for (int i = 0; i < 40; ++i) {
    const int32_t prompt = 1 + static_cast<int32_t>(rng() % 20);
    const int32_t max_tokens = 1 + static_cast<int32_t>(rng() % (44 - prompt - 1));
    seqs.push_back(e.add(tokens_from(1000 * i, prompt), max_tokens));
  }
  e.run(5000);
  for (Sequence* s : seqs) EXPECT_EQ(s->num_output(), s->max_tokens) << "sequence " << s->id;
  EXPECT_GT(e.num_preemptions(), 0);
}

TEST(SchedulerTest, ForkSharesBlocksAndCopiesTheSharedPartialBlockOnWrite) {
  FakeEngine e(sched_options(8, 512, 64), kv_options(16, 4));
  Sequence* p = e.add(tokens_from(0, 6), 4, /*forks=*/2);
  e.step();  // prefill, fork two children, each samples its first token
  ASSERT_EQ(e.scheduler().num_running(), 3);
  const std::vector<int32_t> shared = p->kv.table.blocks();
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(e.kv().allocator().ref_count(shared[0]), 3);
  EXPECT_EQ(e.kv().allocator().ref_count(shared[1]), 3);
  EXPECT_EQ(e.kv().num_used_blocks(), 2);
  // Each decode writes position 6 of the shared partial block: the first two writers copy it;
  // the last one owns it by then. The full block is never copied.
  const StepPlan plan = e.step();
  ASSERT_EQ(plan.copies.size(), 2u);
  for (const BlockCopy& c : plan.copies) EXPECT_EQ(c.src, shared[1]);
  EXPECT_EQ(e.kv().allocator().ref_count(shared[0]), 3);
  EXPECT_EQ(e.kv().num_used_blocks(), 4);
  EXPECT_EQ(e.num_copies(), 2);
  e.run(100);
}

TEST(SchedulerTest, ForksNeverPushAStepPastMaxNumSeqs) {
  FakeEngine e(sched_options(2, 512, 64), kv_options(32, 4));
  e.add(tokens_from(0, 6), 5, /*forks=*/3);
  e.step();
  EXPECT_EQ(e.scheduler().num_running(), 4);
  e.run(100);  // each step checks scheduled <= max_num_seqs
}

// Random load: arrivals over time, shared prefixes and identical prompts from a tiny vocabulary,
// parallel sampling, aborts, and a pool small enough that preemption is frequent. Every step
// checks every invariant; at the end nothing is held.
struct StressTotals {
  int64_t preemptions = 0;
  int64_t copies = 0;
  int64_t hit_tokens = 0;
  int64_t rejected = 0;
  int64_t swap_outs = 0;
  int64_t swap_ins = 0;
  int64_t restored_blocks = 0;
};

void stress(uint32_t seed, StressTotals& totals) {
  std::mt19937 rng(seed);
  auto uniform = [&rng](int32_t lo, int32_t hi) {  // [lo, hi]
    return lo + static_cast<int32_t>(rng() % static_cast<uint32_t>(hi - lo + 1));
  };
  const int32_t bs = std::vector<int32_t>{1, 2, 4, 8}[rng() % 4];
  const int32_t num_blocks = uniform(8, 40) * (bs == 1 ? 2 : 1);
  const int32_t watermark = uniform(0, 1);
  const bool caching = rng() % 5 != 0;
  const int32_t usable_tokens = (num_blocks - watermark) * bs;
  const int32_t max_model_len = rng() % 2 ? usable_tokens : uniform(2, usable_tokens);
  const int32_t budget = uniform(1, 4 * bs + 16);
  const int32_t max_num_seqs = uniform(1, 8);
  SCOPED_TRACE("seed " + std::to_string(seed) + ": block_size " + std::to_string(bs) + ", blocks " +
               std::to_string(num_blocks) + ", watermark " + std::to_string(watermark) +
               ", caching " + std::to_string(caching) + ", budget " + std::to_string(budget) +
               ", max_num_seqs " + std::to_string(max_num_seqs) + ", max_model_len " +
               std::to_string(max_model_len));
  const int32_t swap_blocks = rng() % 2 ? uniform(1, 2 * num_blocks) : 0;
  SCOPED_TRACE("swap blocks " + std::to_string(swap_blocks));
  FakeEngine e(sched_options(max_num_seqs, budget, max_model_len),
               kv_options(num_blocks, bs, watermark, caching), swap_blocks);
  const int32_t vocab = uniform(2, 50);
  std::vector<std::vector<int32_t>> prefixes(3);
  for (auto& p : prefixes) {
    p.resize(static_cast<size_t>(uniform(0, 3 * bs + 2)));
    for (int32_t& t : p) t = uniform(0, vocab - 1);
  }
  int to_add = 60;
  for (int steps = 0; to_add > 0 || e.scheduler().has_work(); ++steps) {
    ASSERT_LT(steps, 20000) << "no progress";
    while (to_add > 0 && (rng() % 3 == 0 || !e.scheduler().has_work())) {
      --to_add;
      std::vector<int32_t> prompt = prefixes[rng() % prefixes.size()];
      for (int32_t n = uniform(1, 2 * bs + 3); n > 0; --n) prompt.push_back(uniform(0, vocab - 1));
      const int32_t max_tokens = uniform(1, 3 * bs + 2);
      const int64_t total = static_cast<int64_t>(prompt.size()) + max_tokens;
      const bool fits = total <= max_model_len && total <= usable_tokens;
      const Status st = e.scheduler().check_fits(static_cast<int32_t>(prompt.size()), max_tokens);
      ASSERT_EQ(st.is_ok(), fits) << st.to_string();
      if (!fits) {
        ++totals.rejected;
        continue;
      }
      e.add(std::move(prompt), max_tokens, rng() % 6 == 0 ? uniform(1, 2) : 0);
    }
    if (rng() % 20 == 0) {
      std::vector<Sequence*> live = e.live();
      if (!live.empty()) e.abort(live[rng() % live.size()]);
    }
    if (e.scheduler().has_work()) e.step();
    if (::testing::Test::HasFailure()) return;
  }
  e.check_drained();
  totals.preemptions += e.num_preemptions();
  totals.copies += e.num_copies();
  totals.hit_tokens += e.kv().prefix_hit_tokens();
  totals.swap_outs += e.num_swap_outs();
  totals.swap_ins += e.num_swap_ins();
  totals.restored_blocks += e.num_restored_blocks();
}

TEST(SchedulerStressTest, RandomLoadKeepsEveryInvariant) {
  StressTotals totals;
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    stress(seed, totals);
    if (HasFailure()) break;
  }
  // The load did exercise what it is meant to.
  EXPECT_GT(totals.preemptions, 500);
  EXPECT_GT(totals.copies, 500);
  EXPECT_GT(totals.hit_tokens, 10000);
  EXPECT_GT(totals.rejected, 0);
  EXPECT_GT(totals.swap_outs, 300);
  EXPECT_GT(totals.swap_ins, 300);
  EXPECT_GT(totals.restored_blocks, 100);
}

}  // namespace
}  // namespace tierserve

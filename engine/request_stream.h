// RequestStream: the output channel of one request (DESIGN.md §4). The engine thread pushes
// updates; one consumer thread (an HTTP handler, the command line, a test) takes them.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/sampling_params.h"

namespace tierserve {

// New tokens of one of a request's outputs since its previous update.
struct RequestOutput {
  int64_t request_id = 0;
  int32_t index = 0;               // which of the request's n outputs
  std::vector<int32_t> token_ids;  // new tokens; the final update carries the last token (an EOS
                                   // or stop token when finish_reason is "stop")
  std::vector<float> logprobs;     // raw log-probability of each new token, if asked for
  // Per new token, when params.logprobs = k > 0: the k most likely tokens, best first.
  std::vector<std::vector<TopLogprob>> top_logprobs;
  bool finished = false;          // no more updates for this output
  std::string finish_reason;      // when finished: "stop", "length", "abort" or "error"
  Status error;                   // when finish_reason is "error": what failed
  int32_t num_prompt_tokens = 0;  // the prompt's length
  int32_t num_cached_tokens = 0;  // prompt tokens served from the prefix cache
  double queue_seconds = -1;      // in one update only, the first after the request was
                                  // scheduled: seconds from add_request() until then; else -1
};

class RequestStream {
 public:
  // `num_outputs` is the request's n. `on_ready`, if given, is called (on the engine thread,
  // without the lock held) after each push, to wake an event loop.
  RequestStream(int64_t request_id, int32_t num_outputs, std::function<void()> on_ready = nullptr)
      : request_id_(request_id), unfinished_(num_outputs), on_ready_(std::move(on_ready)) {}

  int64_t request_id() const { return request_id_; }

  // Blocks until an update is available and returns it; nullopt once every output has
  // finished and every update was taken.
  std::optional<RequestOutput> next();
  // Returns an update if one is available, without blocking.
  std::optional<RequestOutput> poll();
  // Every output finished and every update taken.
  bool done() const;

  // Engine thread.
  void push(RequestOutput output);

 private:
  const int64_t request_id_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestOutput> queue_;
  int32_t unfinished_;  // outputs not yet finished (counted at push)
  std::function<void()> on_ready_;
};

}  // namespace tierserve

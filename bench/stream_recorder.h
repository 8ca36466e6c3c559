// Reads an OpenAI streaming response body (server-sent events, `data: {json}` per event, ending
// with `data: [DONE]`) as its bytes arrive, and records what a serving benchmark measures: when
// each chunk with content arrived (a chat chunk's delta.content, a completion chunk's text; the
// role-only first chat chunk is not content), the text, and the token counts of the usage chunk.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bench/serve_metrics.h"

namespace tierserve::bench {

class StreamRecorder {
 public:
  // `bytes` (any split of the body) arrived `t` seconds after the request was sent. Every event
  // completed by them is stamped `t`, as a client that reads the socket sees it.
  void feed(std::string_view bytes, double t);

  int64_t content_chunks() const { return content_chunks_; }

  // Fills `r`'s timings, text and token counts (usage first, else content chunks and
  // `dataset_prompt_tokens`) for a body that ended at `end_s`. A stream without [DONE], with an
  // error event, or without content marks `r` failed (error class "stream").
  void finish(double end_s, int64_t dataset_prompt_tokens, RequestRecord* r) const;

 private:
  void event(std::string_view data, double t);

  std::string pending_;  // bytes of an unfinished line
  std::string data_;     // data lines of the current event
  bool done_ = false;
  std::string error_;  // an `error` event from the server, or an event that is not JSON
  int64_t content_chunks_ = 0;
  std::optional<double> first_s_;
  double last_s_ = 0;
  std::vector<double> itl_s_;
  std::string text_;
  std::optional<int64_t> prompt_tokens_, completion_tokens_;
};

}  // namespace tierserve::bench

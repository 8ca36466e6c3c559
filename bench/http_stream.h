// The load generator's HTTP side: one keep-alive HTTP/1.1 connection to an OpenAI-compatible
// server (Boost.Beast), which posts a JSON body and hands the response body to the caller piece
// by piece as it streams in, stamped with the time since the request was sent. Every operation
// has a deadline. https is not supported (a load generator on the server's own network).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tierserve::bench {

// http://HOST[:PORT][/PREFIX]: where the server is.
struct BaseUrl {
  std::string host;
  uint16_t port = 80;
  std::string prefix;  // prepended to every target ("" or "/something", no trailing '/')
};
// Errors name what is wrong with `url` (kInvalidArgument).
Result<BaseUrl> parse_base_url(std::string_view url);

struct PostOutcome {
  int status = 0;           // the HTTP status; 0 when none arrived
  std::string error_class;  // empty on a complete 200 response; else "connect", "timeout",
                            // "http_<status>" or "connection" (reset or closed mid-response)
  std::string error;        // what went wrong (with the start of the body for http_*)
  double end_s = 0;         // the last byte, since the request was sent
};

// Not thread-safe: one request at a time. Reconnects when the server closed the connection.
class StreamingConnection {
 public:
  explicit StreamingConnection(BaseUrl url);
  ~StreamingConnection();
  StreamingConnection(const StreamingConnection&) = delete;
  StreamingConnection& operator=(const StreamingConnection&) = delete;

  // POSTs `body` (JSON) to prefix + `target`, with `Authorization: Bearer api_key` when it is not
  // empty. For a 200 response, each piece of the body goes to on_body(bytes, t) as it arrives
  // (t in seconds since the request was sent); other statuses are read whole and reported.
  // `timeout` bounds the connect and each read and write.
  PostOutcome post(const std::string& target, const std::string& body, const std::string& api_key,
                   std::chrono::milliseconds timeout,
                   const std::function<void(std::string_view, double)>& on_body);
  // The same as a GET without a body.
  PostOutcome get(const std::string& target, const std::string& api_key,
                  std::chrono::milliseconds timeout,
                  const std::function<void(std::string_view, double)>& on_body);

 private:
  PostOutcome send(bool post, const std::string& target, const std::string& body,
                   const std::string& api_key, std::chrono::milliseconds timeout,
                   const std::function<void(std::string_view, double)>& on_body);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierserve::bench

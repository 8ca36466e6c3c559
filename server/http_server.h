// HttpServer: the HTTP/1.1 layer of `tierserve serve` (Boost.Beast on Asio). Generic: it knows
// routes and handlers, nothing about OpenAI or the engine (DESIGN.md §4: server threads parse,
// validate, enqueue and stream; the engine thread answers later through an HttpResponder).
//
// What the layer guarantees, whatever the client does:
//  - keep-alive; a request must arrive completely within read_timeout, an idle keep-alive
//    connection is closed after idle_timeout, and a response write (one batch of queued bytes)
//    that does not complete within write_timeout closes the connection (a client that stops
//    reading), cancelling its request;
//  - 413 for a body over max_body_bytes, 431 for a header over max_header_bytes, 400 for a
//    malformed request (each closes the connection, no other request is affected);
//  - a client that disconnects while its request is handled cancels it at once (on_cancel);
//  - `Authorization: Bearer <api_key>` on every path under /v1/ when an api_key is set (401 with
//    body {"error": "Unauthorized"}; compared in constant time);
//  - 404 / 405 with OpenAI-shaped JSON errors for unknown paths / methods.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tierserve {

struct HttpServerOptions {
  std::string host = "127.0.0.1";                  // address to bind (IPv4 or IPv6 literal)
  uint16_t port = 8000;                            // 0 = any free port (tests); see port()
  int threads = 2;                                 // io_context threads, >= 1
  std::string api_key;                             // empty = no auth; else required on /v1/*
  uint64_t max_body_bytes = 8 << 20;               // 413 beyond
  uint32_t max_header_bytes = 16 << 10;            // request line + fields; 431 beyond
  std::chrono::milliseconds read_timeout{30000};   // a request must arrive completely within this
  std::chrono::milliseconds idle_timeout{120000};  // idle keep-alive connections closed after this
  std::chrono::milliseconds write_timeout{30000};  // a write not done within this closes
  // Signals that wake wait_for_signal() (e.g. {SIGINT, SIGTERM} for `tierserve serve`); handled
  // through asio::signal_set from start() until stop(). Empty = the server touches no signal.
  std::vector<int> stop_signals;

  // Checks ranges (threads >= 1, non-zero limits and timeouts, a non-empty host).
  Status validate() const;
};

// One parsed request, as a handler sees it. Valid only during the handler call: copy what is
// needed later.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query string
  std::string path;    // target without the query string
  std::string body;    // the whole body (at most max_body_bytes)
  std::vector<std::pair<std::string, std::string>> headers;  // in the order received

  // The first header with this name (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
};

// How a handler answers: exactly one of respond() or start_stream() + send_event()* +
// end_stream(). Thread-safe: any method may be called from any thread, during or after the
// handler call, and never blocks on the network (writes are queued onto the connection's strand).
// Calls after the client went away or the server stopped are ignored (and cheap). Calling them
// out of order (respond twice, send_event before start_stream, ...) is a bug and aborts.
// Dropping the last reference without finishing answers 500 (or ends the stream) for the handler.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  // A complete response with Content-Length. extra_headers must not contain CR or LF.
  virtual void respond(int status, std::string content_type, std::string body,
                       std::vector<std::pair<std::string, std::string>> extra_headers = {}) = 0;
  // Starts a Server-Sent Events response: Content-Type text/event-stream, chunked.
  virtual void start_stream(int status = 200) = 0;
  // Writes one event, "data: " + data + "\n\n", as its own chunk, as soon as possible.
  virtual void send_event(std::string data) = 0;
  // Writes the last chunk; the connection then serves its next request (keep-alive).
  virtual void end_stream() = 0;
  // `fn` is called once when the client disconnects (or its connection times out, or the server
  // stops) before the handler finished its response (respond() or end_stream()). It runs on a
  // server thread, or on the thread calling stop() for requests still open when the io threads
  // have ended, or at once on the calling thread when set after the cancellation. Set it before
  // returning from the handler; it must not block.
  virtual void on_cancel(std::function<void()> fn) = 0;
  // True once the request was cancelled (as above); later calls are ignored.
  virtual bool cancelled() const = 0;
};

// Runs on a server thread (the connection's strand) and must not block: it answers at once or
// keeps the responder and answers later from another thread. Handlers of different connections
// run concurrently on different server threads, so a handler must be thread-safe.
using HttpHandler = std::function<void(const HttpRequest&, std::shared_ptr<HttpResponder>)>;

class HttpServer {
 public:
  // Validates the options and binds host:port (listening, not yet accepting). Errors name
  // host:port and the cause (address in use, bad address, permission).
  static Result<std::unique_ptr<HttpServer>> create(const HttpServerOptions& options);
  // stop(0) when still running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Adds a handler for an exact path (no query string) and method. Call before start().
  void route(std::string method, std::string path, HttpHandler handler);
  // Starts the io_context threads and accepting; returns at once. Call once.
  void start();
  // The bound port (the ephemeral one when options.port was 0).
  uint16_t port() const;
  // Stops accepting at once (new connections are refused), closes idle connections, lets
  // requests in flight finish for up to `grace` (their responses carry Connection: close), then
  // cancels the rest and closes everything. Blocks until the io threads have ended. Idempotent;
  // must not be called from a handler or a server thread.
  void stop(std::chrono::milliseconds grace);
  // Blocks until one of options.stop_signals arrives (returns its number) or stop() begins
  // (returns 0). For main: `server->wait_for_signal(); server->stop(grace);`.
  int wait_for_signal();

  // Connections accepted and not yet closed.
  int64_t open_connections() const;
  // Requests parsed (or rejected) whose exchange has not ended: its response is not completely
  // written and it was not cancelled.
  int64_t requests_in_flight() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierserve

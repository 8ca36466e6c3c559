// HttpSession: one accepted connection of HttpServer (internal to server/). It reads and parses
// requests with Beast's parser, dispatches them to the routes, and writes the responses that the
// handler's HttpResponder queues. Everything it owns runs on its strand.
//
// The session always keeps one read outstanding, also while a handler works on a request, so
// that a client that disconnects is noticed at once and its request cancelled. Because that read
// is always pending, the read-side deadlines (read_timeout for a request, idle_timeout between
// requests) are the session's own timers rather than beast::tcp_stream's shared expiry.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/http_server.h"

namespace tierserve {

class HttpSession;

// SHA-256 of an API key (raw 32 bytes), the form HttpServerShared keeps it in.
std::string hash_api_key(std::string_view key);

// State shared by the server and its sessions. Lives in HttpServer::Impl and outlives every
// session (the io_context, which owns the last references to sessions, is destroyed first).
struct HttpServerShared {
  HttpServerOptions options;
  // path -> (method, handler); written only before start(), read-only afterwards.
  std::unordered_map<std::string, std::vector<std::pair<std::string, HttpHandler>>> routes;
  std::string api_key_digest;  // SHA-256 of options.api_key; empty when no key is set

  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> requests_in_flight{0};
  std::atomic<bool> stopping{false};  // set when stop() begins

  std::mutex sessions_mu;  // guards sessions and next_session_id
  std::unordered_map<uint64_t, std::weak_ptr<HttpSession>> sessions;
  uint64_t next_session_id = 0;

  // Live sessions, for broadcasting (stop()). Takes sessions_mu.
  std::vector<std::shared_ptr<HttpSession>> live_sessions();
};

class ExchangeLink;

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  // `socket` is connected and its executor is a strand of the server's io_context.
  HttpSession(boost::asio::ip::tcp::socket socket, HttpServerShared& shared);
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  // Registers the session and starts reading its first request. Call once, right after
  // construction (from any thread: it posts onto the strand).
  void start();
  // Posts: the server is stopping. Closes the connection when no request is being handled;
  // otherwise the current response is the last one (Connection: close).
  void post_server_stopping();
  // Posts: closes the connection now, cancelling the request in flight.
  void post_close();
  // After the io threads have ended (no concurrency left): cancels the request in flight from
  // the calling thread and closes the socket. Afterwards no responder references the session.
  void abandon();

  // The responder's entry points; each is posted onto the strand by ExchangeLink and checks
  // that `exchange` is still the current one.
  void write_response(uint64_t exchange, int status, std::string content_type, std::string body,
                      std::vector<std::pair<std::string, std::string>> extra_headers);
  void write_stream_start(uint64_t exchange, int status);
  void write_event(uint64_t exchange, std::string data);
  void write_stream_end(uint64_t exchange);

  const boost::asio::ip::tcp::socket::executor_type& executor() const { return executor_; }

 private:
  enum class Phase {
    kReading,    // waiting for / parsing a request
    kHandling,   // a request is with its handler or its response is being written
    kLingering,  // last response written, send side shut: draining until the client closes
    kClosed,
  };
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  void begin_request(bool first);
  void ensure_reading();
  void on_read(boost::system::error_code ec, std::size_t bytes);
  void parse_buffered();
  void fail_request(boost::system::error_code ec);
  void dispatch();
  // Answers the current exchange with a server-made error (404, 405, 401).
  void answer_error(int status, std::string body,
                    std::vector<std::pair<std::string, std::string>> extra_headers = {});
  void queue(std::string bytes);
  void start_write();
  void on_write(boost::system::error_code ec);
  // The handler finished and everything it queued was written.
  void end_exchange();
  // Shuts the send side and drains what the client still sends, then closes.
  void linger();
  void arm_read_deadline(std::chrono::milliseconds timeout);
  void disarm_read_deadline();
  void do_close();
  std::string connection_header_value() const;

  boost::asio::ip::tcp::socket socket_;
  boost::asio::ip::tcp::socket::executor_type executor_;  // the session's strand
  HttpServerShared& shared_;
  uint64_t id_ = 0;
  bool registered_ = false;
  bool counted_ = true;  // still counted in shared_.open_connections

  Phase phase_ = Phase::kReading;
  boost::beast::flat_buffer buffer_;       // received bytes not yet parsed
  std::array<char, 16 << 10> read_chunk_;  // target of the outstanding read
  std::optional<Parser> parser_;
  bool reading_ = false;          // an async_read_some is outstanding
  bool request_started_ = false;  // bytes of the current request have arrived
  bool sent_continue_ = false;    // "100 Continue" written for the current request

  boost::asio::steady_timer read_timer_;
  uint64_t read_gen_ = 0;  // bumped to invalidate a pending read deadline
  boost::asio::steady_timer write_timer_;
  uint64_t write_gen_ = 0;

  uint64_t exchange_ = 0;               // id of the current exchange (request being handled)
  std::shared_ptr<ExchangeLink> link_;  // the current exchange's, shared with its responder
  bool handler_finished_ = false;       // respond() or end_stream() reached the session
  bool keep_alive_ = true;              // the current request allows keep-alive
  bool close_after_response_ = false;

  std::string queued_;   // bytes waiting for the next write
  std::string writing_;  // bytes of the write in flight
  bool write_pending_ = false;
};

}  // namespace tierserve

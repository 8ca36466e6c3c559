#include "server/http_session.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/write.hpp>
#include <cctype>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/check.h"
#include "common/logging.h"

namespace tierserve {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Unparsed bytes a session buffers while a handler works (pipelined requests); reading pauses
// beyond this, which also bounds memory per connection.
constexpr size_t kMaxBufferedExtra = 64 << 10;
// How long a closing connection drains what the client still sends, so that the client reads
// our last response (e.g. a 413) instead of a reset.
constexpr std::chrono::milliseconds kMaxLinger{2000};

std::string to_std(boost::beast::string_view s) { return std::string(s.data(), s.size()); }

bool has_crlf(const std::string& s) { return s.find_first_of("\r\n") != std::string::npos; }

// Status line and fields serialised by Beast, followed by the blank line.
std::string serialize_header(int status, const std::string& content_type,
                             const Headers& extra_headers, bool chunked,
                             std::optional<size_t> content_length, const std::string& connection) {
  http::response<http::empty_body> res;
  res.version(11);
  res.result(static_cast<unsigned>(status));
  res.set(http::field::server, "tierserve");
  res.set(http::field::content_type, content_type);
  if (chunked) {
    res.set(http::field::cache_control, "no-cache");
    res.chunked(true);
  } else if (content_length) {
    res.content_length(*content_length);
  }
  res.set(http::field::connection, connection);
  for (const auto& [name, value] : extra_headers) {
    TS_CHECK(!has_crlf(name) && !has_crlf(value)) << "HTTP header with CR/LF: " << name;
    res.insert(name, value);
  }
  std::ostringstream out;
  out << res.base();
  return out.str();
}

// The OpenAI error shape the API routes use too (server/openai_response.h's error_json):
// {"error": {"message", "type", "param": null, "code": <HTTP status>}}.
std::string openai_error(int status, const std::string& message, const std::string& type) {
  nlohmann::json j = {
      {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
  return j.dump();
}

std::string sha256(std::string_view s) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// True when `authorization` is "Bearer <key>" for the key whose SHA-256 is `digest`. Comparing
// digests of equal length with CRYPTO_memcmp takes the same time whatever the key's length or
// how much of it matches.
bool bearer_matches(std::string_view authorization, const std::string& digest) {
  constexpr std::string_view kScheme = "bearer ";
  std::string_view token;
  if (authorization.size() > kScheme.size() &&
      iequals(authorization.substr(0, kScheme.size()), kScheme)) {
    token = authorization.substr(kScheme.size());
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  }
  std::string got = sha256(token);
  bool equal = CRYPTO_memcmp(got.data(), digest.data(), digest.size()) == 0;
  return equal && !token.empty();
}

}  // namespace

std::string hash_api_key(std::string_view key) { return sha256(key); }

// The state of one exchange, shared by its session and its SessionResponder. Calls post onto
// the session's strand under mu_, so that calls from one thread keep their order and none is
// posted once the exchange is detached (after a cancellation, after the handler finished, or
// after stop()); the session can always detach it, whoever holds the responder.
class ExchangeLink : public std::enable_shared_from_this<ExchangeLink> {
 public:
  ExchangeLink(std::weak_ptr<HttpSession> session, uint64_t exchange)
      : session_(std::move(session)), exchange_(exchange) {}

  void respond(int status, std::string content_type, std::string body, Headers extra_headers) {
    std::lock_guard lock(mu_);
    TS_CHECK(state_ == State::kNone) << "respond() after respond() or start_stream()";
    state_ = State::kDone;
    post_locked([ex = exchange_, status, ct = std::move(content_type), b = std::move(body),
                 h = std::move(extra_headers)](HttpSession& s) mutable {
      s.write_response(ex, status, std::move(ct), std::move(b), std::move(h));
    });
    session_.reset();
  }

  void start_stream(int status) {
    std::lock_guard lock(mu_);
    TS_CHECK(state_ == State::kNone) << "start_stream() after respond() or start_stream()";
    state_ = State::kStreaming;
    post_locked([ex = exchange_, status](HttpSession& s) { s.write_stream_start(ex, status); });
  }

  void send_event(std::string data) {
    std::lock_guard lock(mu_);
    TS_CHECK(state_ == State::kStreaming) << "send_event() outside start_stream()..end_stream()";
    post_locked([ex = exchange_, d = std::move(data)](HttpSession& s) mutable {
      s.write_event(ex, std::move(d));
    });
  }

  void end_stream() {
    std::lock_guard lock(mu_);
    TS_CHECK(state_ == State::kStreaming) << "end_stream() outside start_stream()..end_stream()";
    state_ = State::kDone;
    post_locked([ex = exchange_](HttpSession& s) { s.write_stream_end(ex); });
    session_.reset();
  }

  // The handler dropped its responder: finish the response for it if it had not.
  void handler_dropped() {
    std::lock_guard lock(mu_);
    if (state_ == State::kNone) {
      post_locked([ex = exchange_](HttpSession& s) {
        s.write_response(ex, 500, "application/json",
                         openai_error(500, "the handler did not respond", "InternalServerError"),
                         {});
      });
    } else if (state_ == State::kStreaming) {
      post_locked([ex = exchange_](HttpSession& s) { s.write_stream_end(ex); });
    }
    state_ = State::kDone;
    session_.reset();
  }

  void on_cancel(std::function<void()> fn) {
    std::unique_lock lock(mu_);
    if (cancelled_.load()) {
      lock.unlock();
      if (fn) fn();
      return;
    }
    on_cancel_ = std::move(fn);
  }

  bool cancelled() const { return cancelled_.load(); }

  // Called by the session (on its strand, or by abandon()) when the connection is lost: detaches
  // the exchange and runs the cancellation callback unless the handler had already finished.
  void cancel() {
    std::function<void()> fn;
    {
      std::lock_guard lock(mu_);
      session_.reset();
      if (state_ == State::kDone || cancelled_.load()) return;
      cancelled_.store(true);
      fn = std::move(on_cancel_);
    }
    if (fn) fn();
  }

 private:
  enum class State { kNone, kStreaming, kDone };

  // Posts `op` onto the session's strand if the exchange is still attached. The strong reference
  // moves into the posted function, so none is left on this thread after mu_ is released.
  //
  // The posted function takes mu_ once before it runs `op`: the posting thread still holds the
  // strand's executor (and asio's copies of it) until post() returns, and releasing the last of
  // those after the session, and with it the io_context, is gone would touch a destroyed strand
  // service. Because the session can only be dropped after that barrier, the posting thread has
  // left asio by then. (A function that never runs is destroyed by ~io_context, after stop()
  // abandoned the session, which also waits for mu_.)
  template <typename Op>
  void post_locked(Op op) {
    std::shared_ptr<HttpSession> s = session_.lock();
    if (!s) return;
    const auto& executor = s->executor();
    asio::post(executor,
               [link = shared_from_this(), s = std::move(s), op = std::move(op)]() mutable {
                 { std::lock_guard barrier(link->mu_); }
                 op(*s);
               });
  }

  mutable std::mutex mu_;
  std::weak_ptr<HttpSession> session_;  // reset when the exchange is detached
  const uint64_t exchange_;
  State state_ = State::kNone;
  std::atomic<bool> cancelled_{false};
  std::function<void()> on_cancel_;
};

namespace {

// What a handler holds; its destruction tells the link that the handler let go.
class SessionResponder final : public HttpResponder {
 public:
  explicit SessionResponder(std::shared_ptr<ExchangeLink> link) : link_(std::move(link)) {}
  ~SessionResponder() override { link_->handler_dropped(); }

  void respond(int status, std::string content_type, std::string body,
               Headers extra_headers) override {
    link_->respond(status, std::move(content_type), std::move(body), std::move(extra_headers));
  }
  void start_stream(int status) override { link_->start_stream(status); }
  void send_event(std::string data) override { link_->send_event(std::move(data)); }
  void end_stream() override { link_->end_stream(); }
  void on_cancel(std::function<void()> fn) override { link_->on_cancel(std::move(fn)); }
  bool cancelled() const override { return link_->cancelled(); }

 private:
  std::shared_ptr<ExchangeLink> link_;
};

}  // namespace

std::vector<std::shared_ptr<HttpSession>> HttpServerShared::live_sessions() {
  std::vector<std::shared_ptr<HttpSession>> out;
  std::lock_guard lock(sessions_mu);
  out.reserve(sessions.size());
  for (auto& [id, weak] : sessions) {
    if (auto s = weak.lock()) out.push_back(std::move(s));
  }
  return out;
}

HttpSession::HttpSession(asio::ip::tcp::socket socket, HttpServerShared& shared)
    : socket_(std::move(socket)),
      executor_(socket_.get_executor()),
      shared_(shared),
      read_timer_(executor_),
      write_timer_(executor_) {
  shared_.open_connections.fetch_add(1);
}

HttpSession::~HttpSession() {
  if (counted_) shared_.open_connections.fetch_sub(1);
  if (registered_) {
    std::lock_guard lock(shared_.sessions_mu);
    shared_.sessions.erase(id_);
  }
}

void HttpSession::start() {
  {
    std::lock_guard lock(shared_.sessions_mu);
    id_ = shared_.next_session_id++;
    shared_.sessions.emplace(id_, weak_from_this());
    registered_ = true;
  }
  asio::post(executor_, [self = shared_from_this()] {
    // A session registered after stop() took its snapshot sees the flag (it is set first).
    if (self->shared_.stopping.load()) {
      self->do_close();
      return;
    }
    self->begin_request(/*first=*/true);
  });
}

void HttpSession::post_server_stopping() {
  asio::post(executor_, [self = shared_from_this()] {
    self->close_after_response_ = true;
    if (self->phase_ == Phase::kReading) self->do_close();
  });
}

void HttpSession::post_close() {
  asio::post(executor_, [self = shared_from_this()] { self->do_close(); });
}

void HttpSession::abandon() { do_close(); }

void HttpSession::begin_request(bool first) {
  phase_ = Phase::kReading;
  parser_.emplace();
  parser_->header_limit(shared_.options.max_header_bytes);
  parser_->body_limit(shared_.options.max_body_bytes);
  parser_->eager(true);
  request_started_ = first || buffer_.size() > 0;
  sent_continue_ = false;
  arm_read_deadline(request_started_ ? shared_.options.read_timeout : shared_.options.idle_timeout);
  parse_buffered();
  ensure_reading();
}

void HttpSession::ensure_reading() {
  if (reading_ || phase_ == Phase::kClosed) return;
  if (buffer_.size() >= shared_.options.max_header_bytes + kMaxBufferedExtra) return;  // paused
  reading_ = true;
  // Into read_chunk_, not buffer_: buffer_ is parsed and consumed while this read is pending.
  socket_.async_read_some(
      asio::buffer(read_chunk_),
      [self = shared_from_this()](error_code ec, size_t n) { self->on_read(ec, n); });
}

void HttpSession::on_read(error_code ec, size_t bytes) {
  reading_ = false;
  if (phase_ == Phase::kClosed) return;
  if (ec) {  // EOF, reset or aborted: the client is gone (or we are closing)
    do_close();
    return;
  }
  if (phase_ == Phase::kLingering) {
    ensure_reading();  // drain and discard
    return;
  }
  asio::buffer_copy(buffer_.prepare(bytes), asio::buffer(read_chunk_, bytes));
  buffer_.commit(bytes);
  if (phase_ == Phase::kReading) {
    if (!request_started_) {
      request_started_ = true;
      arm_read_deadline(shared_.options.read_timeout);
    }
    parse_buffered();
  }
  ensure_reading();
}

void HttpSession::parse_buffered() {
  while (phase_ == Phase::kReading && buffer_.size() > 0) {
    error_code ec;
    auto data = buffer_.data();
    size_t used = parser_->put(asio::const_buffer(data.data(), data.size()), ec);
    buffer_.consume(used);
    if (ec == http::error::need_more) break;
    if (ec) {
      fail_request(ec);
      return;
    }
    if (parser_->is_done()) {
      dispatch();
      return;
    }
    if (parser_->is_header_done() && !sent_continue_) {
      sent_continue_ = true;
      if (iequals(to_std(parser_->get()[http::field::expect]), "100-continue")) {
        queue("HTTP/1.1 100 Continue\r\n\r\n");
      }
    }
    if (used == 0) break;
  }
}

void HttpSession::fail_request(error_code ec) {
  int status = 400;
  std::string body;
  if (ec == http::error::body_limit) {
    status = 413;
    body = openai_error(
        413,
        "request body larger than " + std::to_string(shared_.options.max_body_bytes) + " bytes",
        "PayloadTooLargeError");
  } else if (ec == http::error::header_limit) {
    status = 431;
    body = openai_error(
        431,
        "request header larger than " + std::to_string(shared_.options.max_header_bytes) + " bytes",
        "RequestHeaderFieldsTooLargeError");
  } else {
    body = openai_error(400, "malformed HTTP request: " + ec.message(), "BadRequestError");
  }
  disarm_read_deadline();
  buffer_.consume(buffer_.size());
  phase_ = Phase::kHandling;
  keep_alive_ = false;
  handler_finished_ = true;  // no handler: the exchange ends when the error is written
  ++exchange_;
  shared_.requests_in_flight.fetch_add(1);
  queue(serialize_header(status, "application/json", {}, false, body.size(), "close") + body);
}

void HttpSession::dispatch() {
  disarm_read_deadline();
  phase_ = Phase::kHandling;
  ++exchange_;
  shared_.requests_in_flight.fetch_add(1);
  handler_finished_ = false;
  auto& msg = parser_->get();
  keep_alive_ = msg.keep_alive();

  HttpRequest req;
  req.method = to_std(msg.method_string());
  req.target = to_std(msg.target());
  req.path = req.target.substr(0, req.target.find('?'));
  req.body = std::move(msg.body());
  for (const auto& field : msg) {
    req.headers.emplace_back(to_std(field.name_string()), to_std(field.value()));
  }
  parser_.reset();

  if (!shared_.api_key_digest.empty() && req.path.rfind("/v1/", 0) == 0 &&
      !bearer_matches(req.header("authorization"), shared_.api_key_digest)) {
    answer_error(401, R"({"error": "Unauthorized"})", {{"WWW-Authenticate", "Bearer"}});
    return;
  }
  auto route = shared_.routes.find(req.path);
  if (route == shared_.routes.end()) {
    answer_error(404,
                 openai_error(404, "no route for " + req.method + " " + req.path, "NotFoundError"));
    return;
  }
  const HttpHandler* handler = nullptr;
  std::string allow;
  for (const auto& [method, h] : route->second) {
    if (method == req.method) handler = &h;
    allow += (allow.empty() ? "" : ", ") + method;
  }
  if (handler == nullptr) {
    answer_error(405,
                 openai_error(405, "method " + req.method + " not allowed for " + req.path,
                              "MethodNotAllowedError"),
                 {{"Allow", allow}});
    return;
  }
  link_ = std::make_shared<ExchangeLink>(weak_from_this(), exchange_);
  (*handler)(req, std::make_shared<SessionResponder>(link_));
}

void HttpSession::answer_error(int status, std::string body, Headers extra_headers) {
  write_response(exchange_, status, "application/json", std::move(body), std::move(extra_headers));
}

std::string HttpSession::connection_header_value() const {
  return keep_alive_ && !close_after_response_ ? "keep-alive" : "close";
}

void HttpSession::write_response(uint64_t exchange, int status, std::string content_type,
                                 std::string body, Headers extra_headers) {
  if (phase_ != Phase::kHandling || exchange != exchange_ || handler_finished_) return;
  handler_finished_ = true;
  std::string bytes = serialize_header(status, content_type, extra_headers, false, body.size(),
                                       connection_header_value());
  bytes += body;
  queue(std::move(bytes));
}

void HttpSession::write_stream_start(uint64_t exchange, int status) {
  if (phase_ != Phase::kHandling || exchange != exchange_ || handler_finished_) return;
  queue(serialize_header(status, "text/event-stream", {}, true, std::nullopt,
                         connection_header_value()));
}

void HttpSession::write_event(uint64_t exchange, std::string data) {
  if (phase_ != Phase::kHandling || exchange != exchange_ || handler_finished_) return;
  size_t size = data.size() + 8;  // "data: " + data + "\n\n"
  char hex[32];
  int n = std::snprintf(hex, sizeof(hex), "%zx\r\n", size);
  std::string chunk;
  chunk.reserve(n + size + 2);
  chunk.append(hex, n).append("data: ").append(data).append("\n\n\r\n");
  queue(std::move(chunk));
}

void HttpSession::write_stream_end(uint64_t exchange) {
  if (phase_ != Phase::kHandling || exchange != exchange_ || handler_finished_) return;
  handler_finished_ = true;
  queue("0\r\n\r\n");
}

void HttpSession::queue(std::string bytes) {
  queued_ += bytes;
  if (!write_pending_) start_write();
}

void HttpSession::start_write() {
  writing_ = std::move(queued_);
  queued_.clear();
  write_pending_ = true;
  uint64_t gen = ++write_gen_;
  write_timer_.expires_after(shared_.options.write_timeout);
  write_timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
    if (ec || gen != self->write_gen_ || !self->write_pending_) return;
    TS_LOG(Debug) << "http: write made no progress, closing the connection";
    self->do_close();
  });
  asio::async_write(socket_, asio::buffer(writing_),
                    [self = shared_from_this()](error_code ec, size_t) { self->on_write(ec); });
}

void HttpSession::on_write(error_code ec) {
  write_pending_ = false;
  ++write_gen_;
  write_timer_.cancel();
  if (phase_ == Phase::kClosed) return;
  if (ec) {
    do_close();
    return;
  }
  if (!queued_.empty()) {
    start_write();
  } else if (phase_ == Phase::kHandling && handler_finished_) {
    end_exchange();
  }
}

void HttpSession::end_exchange() {
  shared_.requests_in_flight.fetch_sub(1);
  link_.reset();
  if (!keep_alive_ || close_after_response_ || shared_.stopping.load()) {
    linger();
  } else {
    begin_request(/*first=*/false);
  }
}

void HttpSession::linger() {
  phase_ = Phase::kLingering;
  error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  buffer_.consume(buffer_.size());
  arm_read_deadline(std::min<std::chrono::milliseconds>(shared_.options.read_timeout, kMaxLinger));
  ensure_reading();
}

void HttpSession::arm_read_deadline(std::chrono::milliseconds timeout) {
  uint64_t gen = ++read_gen_;
  read_timer_.expires_after(timeout);
  read_timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
    if (ec || gen != self->read_gen_) return;
    self->do_close();  // a partial request, an idle connection, or a linger ran out of time
  });
}

void HttpSession::disarm_read_deadline() {
  ++read_gen_;
  read_timer_.cancel();
}

void HttpSession::do_close() {
  if (phase_ == Phase::kClosed) return;
  bool in_exchange = phase_ == Phase::kHandling;
  phase_ = Phase::kClosed;
  ++read_gen_;
  ++write_gen_;
  read_timer_.cancel();
  write_timer_.cancel();
  error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (counted_) {
    counted_ = false;
    shared_.open_connections.fetch_sub(1);
  }
  if (in_exchange) {
    shared_.requests_in_flight.fetch_sub(1);
    if (link_) link_->cancel();
    link_.reset();
  }
}

}  // namespace tierserve

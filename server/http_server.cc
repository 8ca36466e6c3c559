#include "server/http_server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cctype>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "common/check.h"
#include "common/logging.h"
#include "server/http_session.h"

namespace tierserve {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

Status HttpServerOptions::validate() const {
  if (host.empty()) return invalid_argument("--host: must not be empty");
  if (threads < 1)
    return invalid_argument("server threads: must be >= 1, got " + std::to_string(threads));
  if (max_body_bytes == 0) return invalid_argument("max_body_bytes: must be > 0");
  if (max_header_bytes < 256) {
    return invalid_argument("max_header_bytes: must be >= 256, got " +
                            std::to_string(max_header_bytes));
  }
  if (read_timeout.count() <= 0 || idle_timeout.count() <= 0 || write_timeout.count() <= 0) {
    return invalid_argument("server timeouts: must be > 0");
  }
  return Status::ok();
}

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() != name.size()) continue;
    bool equal = true;
    for (size_t i = 0; i < key.size() && equal; ++i) {
      equal = std::tolower(static_cast<unsigned char>(key[i])) ==
              std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (equal) return value;
  }
  return "";
}

class HttpServer::Impl {
 public:
  explicit Impl(const HttpServerOptions& options)
      : acceptor_(asio::make_strand(ioc_)), accept_retry_(acceptor_.get_executor()) {
    shared_.options = options;
    if (!options.api_key.empty()) shared_.api_key_digest = hash_api_key(options.api_key);
  }

  Status bind() {
    const auto& o = shared_.options;
    std::string where = o.host + ":" + std::to_string(o.port);
    error_code ec;
    auto address = asio::ip::make_address(o.host, ec);
    if (ec) return invalid_argument("--host " + o.host + ": not an IP address: " + ec.message());
    tcp::endpoint endpoint(address, o.port);
    if (acceptor_.open(endpoint.protocol(), ec); ec) {
      return io_error("cannot open a socket for " + where + ": " + ec.message());
    }
    if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec); ec) {
      return io_error("cannot set SO_REUSEADDR on " + where + ": " + ec.message());
    }
    if (acceptor_.bind(endpoint, ec); ec) {
      return io_error("cannot bind " + where + ": " + ec.message());
    }
    if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec) {
      return io_error("cannot listen on " + where + ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    return Status::ok();
  }

  void route(std::string method, std::string path, HttpHandler handler) {
    TS_CHECK(!started_) << "HttpServer::route() after start()";
    auto& methods = shared_.routes[path];
    for (const auto& entry : methods) {
      TS_CHECK(entry.first != method) << "route registered twice: " << method << " " << path;
    }
    methods.emplace_back(std::move(method), std::move(handler));
  }

  void start() {
    TS_CHECK(!started_) << "HttpServer::start() called twice";
    started_ = true;
    if (!shared_.options.stop_signals.empty()) {
      signals_.emplace(asio::make_strand(ioc_));
      for (int sig : shared_.options.stop_signals) signals_->add(sig);
      signals_->async_wait([this](error_code ec, int sig) {
        if (ec) return;
        std::lock_guard lock(signal_mu_);
        signal_ = sig;
        signal_cv_.notify_all();
      });
    }
    accept();
    running_threads_ = shared_.options.threads;
    for (int i = 0; i < shared_.options.threads; ++i) {
      threads_.emplace_back([this] {
        ioc_.run();
        std::lock_guard lock(threads_mu_);
        --running_threads_;
        threads_cv_.notify_all();
      });
    }
  }

  void stop(std::chrono::milliseconds grace) {
    if (stopped_) return;
    stopped_ = true;
    shared_.stopping.store(true);
    {
      std::lock_guard lock(signal_mu_);
      signal_cv_.notify_all();
    }
    if (!started_) {
      error_code ignored;
      acceptor_.close(ignored);
      return;
    }
    // 1. Stop accepting: closing the listening socket makes new connects fail at once.
    std::promise<void> closed;
    asio::post(acceptor_.get_executor(), [this, &closed] {
      error_code ignored;
      acceptor_.close(ignored);
      accept_retry_.cancel();
      if (signals_) signals_->cancel(ignored);
      closed.set_value();
    });
    closed.get_future().wait();
    // 2. Idle connections close now; the others after their current response.
    for (auto& session : shared_.live_sessions()) session->post_server_stopping();
    // 3. Grace for requests in flight.
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (shared_.requests_in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // 4. Cancel the rest; with no work left the io threads return.
    for (auto& session : shared_.live_sessions()) session->post_close();
    work_.reset();
    {
      std::unique_lock lock(threads_mu_);
      threads_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return running_threads_ == 0; });
    }
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // 5. Sessions whose close never ran (the io_context stopped first) are closed here, so that
    //    no responder references a session once stop() returns.
    auto rest = shared_.live_sessions();
    for (auto& session : rest) session->abandon();
    rest.clear();
  }

  int wait_for_signal() {
    std::unique_lock lock(signal_mu_);
    signal_cv_.wait(lock, [this] { return signal_ != 0 || shared_.stopping.load(); });
    return signal_;
  }

  uint16_t port() const { return port_; }
  HttpServerShared& shared() { return shared_; }

 private:
  // Accepts connections until the acceptor closes; each one gets its own strand.
  void accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
      if (!acceptor_.is_open()) return;
      if (ec) {
        // Out of descriptors or a connection reset before accept: retry shortly, don't spin.
        TS_LOG(Warning) << "http: accept failed: " << ec.message();
        accept_retry_.expires_after(std::chrono::milliseconds(50));
        accept_retry_.async_wait([this](error_code wait_ec) {
          if (!wait_ec && acceptor_.is_open()) accept();
        });
        return;
      }
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::make_shared<HttpSession>(std::move(socket), shared_)->start();
      accept();
    });
  }

  // Destroyed last: sessions (owned by handlers inside ioc_) refer to it.
  HttpServerShared shared_;
  asio::io_context ioc_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(ioc_)};
  tcp::acceptor acceptor_;  // on its own strand
  asio::steady_timer accept_retry_;
  std::optional<asio::signal_set> signals_;
  uint16_t port_ = 0;
  bool started_ = false;
  bool stopped_ = false;

  std::vector<std::thread> threads_;
  std::mutex threads_mu_;
  std::condition_variable threads_cv_;
  int running_threads_ = 0;

  std::mutex signal_mu_;
  std::condition_variable signal_cv_;
  int signal_ = 0;
};

Result<std::unique_ptr<HttpServer>> HttpServer::create(const HttpServerOptions& options) {
  TS_RETURN_IF_ERROR(options.validate());
  auto impl = std::make_unique<Impl>(options);
  TS_RETURN_IF_ERROR(impl->bind());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { impl_->stop(std::chrono::milliseconds(0)); }

void HttpServer::route(std::string method, std::string path, HttpHandler handler) {
  impl_->route(std::move(method), std::move(path), std::move(handler));
}

void HttpServer::start() { impl_->start(); }

uint16_t HttpServer::port() const { return impl_->port(); }

void HttpServer::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

int HttpServer::wait_for_signal() { return impl_->wait_for_signal(); }

int64_t HttpServer::open_connections() const { return impl_->shared().open_connections.load(); }

int64_t HttpServer::requests_in_flight() const { return impl_->shared().requests_in_flight.load(); }

}  // namespace tierserve

#include "bench/http_stream.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <limits>
#include <optional>

namespace tierserve::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;

Result<BaseUrl> parse_base_url(std::string_view url) {
  const std::string_view scheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    return invalid_argument("--base-url " + std::string(url) +
                            ": https is not supported; use http:// on the server's network");
  }
  if (url.rfind(scheme, 0) != 0) {
    return invalid_argument("--base-url " + std::string(url) + ": must start with http://");
  }
  std::string_view rest = url.substr(scheme.size());
  BaseUrl b;
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    b.prefix = std::string(rest.substr(slash));
    while (!b.prefix.empty() && b.prefix.back() == '/') b.prefix.pop_back();
  }
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return invalid_argument("--base-url " + std::string(url) + ": bad port '" +
                              std::string(port) + "'");
    }
    b.port = static_cast<uint16_t>(value);
    authority = authority.substr(0, colon);
  }
  if (authority.empty()) return invalid_argument("--base-url " + std::string(url) + ": no host");
  b.host = std::string(authority);
  return b;
}

struct StreamingConnection::Impl {
  BaseUrl url;
  asio::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  // Runs the asynchronous operation started by `start` to completion on this thread (so that
  // tcp_stream's deadlines apply) and returns its error.
  template <typename Start>
  beast::error_code run(Start start) {
    beast::error_code result;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  void close() {
    if (stream.has_value()) {
      beast::error_code ignored;
      stream->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
      stream.reset();
    }
    buffer.clear();
  }

  beast::error_code connect(std::chrono::milliseconds timeout) {
    close();
    asio::ip::tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
    if (ec) return ec;
    stream.emplace(ioc);
    stream->expires_after(timeout);
    ec = run([&](auto handler) { stream->async_connect(endpoints, handler); });
    if (ec) close();
    return ec;
  }
};

StreamingConnection::StreamingConnection(BaseUrl url) : impl_(std::make_unique<Impl>()) {
  impl_->url = std::move(url);
}

StreamingConnection::~StreamingConnection() { impl_->close(); }

namespace {

std::string class_of(const beast::error_code& ec) {
  return ec == beast::error::timeout ? "timeout" : "connection";
}

}  // namespace

PostOutcome StreamingConnection::post(
    const std::string& target, const std::string& body, const std::string& api_key,
    std::chrono::milliseconds timeout,
    const std::function<void(std::string_view, double)>& on_body) {
  return send(true, target, body, api_key, timeout, on_body);
}

PostOutcome StreamingConnection::get(const std::string& target, const std::string& api_key,
                                     std::chrono::milliseconds timeout,
                                     const std::function<void(std::string_view, double)>& on_body) {
  return send(false, target, "", api_key, timeout, on_body);
}

PostOutcome StreamingConnection::send(
    bool post, const std::string& target, const std::string& body, const std::string& api_key,
    std::chrono::milliseconds timeout,
    const std::function<void(std::string_view, double)>& on_body) {
  Impl& s = *impl_;
  PostOutcome out;
  http::request<http::string_body> req{post ? http::verb::post : http::verb::get,
                                       s.url.prefix + target, 11};
  req.set(http::field::host, s.url.host + ":" + std::to_string(s.url.port));
  req.set(http::field::user_agent, "tierserve-bench");
  if (post) req.set(http::field::content_type, "application/json");
  if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
  req.keep_alive(true);
  if (post) {
    req.body() = body;
    req.prepare_payload();
  }

  const Clock::time_point t0 = Clock::now();
  auto since = [t0] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  // A kept-alive connection the server has closed fails at the write or the first read; one
  // fresh connection is tried then, before anything of the response has been seen.
  beast::error_code ec;
  std::optional<http::response_parser<http::buffer_body>> parser;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = s.stream.has_value();
    if (!reused) {
      ec = s.connect(timeout);
      if (ec) {
        out.error_class = ec == beast::error::timeout ? "timeout" : "connect";
        out.error =
            "connecting to " + s.url.host + ":" + std::to_string(s.url.port) + ": " + ec.message();
        out.end_s = since();
        return out;
      }
    }
    s.stream->expires_after(timeout);
    ec = s.run([&](auto handler) { http::async_write(*s.stream, req, handler); });
    if (!ec) {
      parser.emplace();
      parser->body_limit(std::numeric_limits<std::uint64_t>::max());
      s.stream->expires_after(timeout);
      ec = s.run(
          [&](auto handler) { http::async_read_header(*s.stream, s.buffer, *parser, handler); });
    }
    if (!ec) break;
    s.close();
    if (!reused || ec == beast::error::timeout) break;
  }
  if (ec) {
    out.error_class = class_of(ec);
    out.error = "sending the request or reading the response header: " + ec.message();
    out.end_s = since();
    return out;
  }
  out.status = static_cast<int>(parser->get().result_int());
  const bool ok = out.status == 200;
  std::string error_body;
  char chunk[16384];
  while (!parser->is_done()) {
    parser->get().body().data = chunk;
    parser->get().body().size = sizeof(chunk);
    s.stream->expires_after(timeout);
    ec = s.run([&](auto handler) { http::async_read_some(*s.stream, s.buffer, *parser, handler); });
    if (ec == http::error::need_buffer) ec = {};
    const size_t n = sizeof(chunk) - parser->get().body().size;
    if (n > 0) {
      if (ok) {
        on_body(std::string_view(chunk, n), since());
      } else if (error_body.size() < 4096) {
        error_body.append(chunk, std::min(n, 4096 - error_body.size()));
      }
    }
    if (ec) break;
  }
  out.end_s = since();
  if (ec) {
    s.close();
    out.error_class = class_of(ec);
    out.error = "reading the response body: " + ec.message();
    return out;
  }
  if (!parser->get().keep_alive()) s.close();
  if (!ok) {
    out.error_class = "http_" + std::to_string(out.status);
    out.error = "HTTP " + std::to_string(out.status) + ": " + error_body;
  }
  return out;
}

}  // namespace tierserve::bench

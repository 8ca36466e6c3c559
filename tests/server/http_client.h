// A small blocking HTTP/1.1 client on POSIX sockets, for tests that must send exactly the bytes
// they want (partial, garbage, oversized) to a server on loopback. Header-only; test code.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <thread>

namespace tierserve::testing {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Returns a connected socket, or -1 when the connection was refused.
inline int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};  // no test waits longer for a byte
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

inline bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// True when the peer closed (EOF or reset) within `timeout`; false when the connection is
// still open after it. Discards any bytes received meanwhile.
inline bool closed_within(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
  std::vector<std::string> chunks;             // chunk payloads, when chunked
};

// Reads responses from one connection, keeping bytes beyond the current one.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}

  // Reads one complete response; false on EOF, timeout or a framing error.
  bool read(Response* out) {
    *out = Response();
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return false;
    }
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    if (head.rfind("HTTP/1.1 ", 0) != 0) return false;
    out->status = std::stoi(head.substr(9, 3));
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
      size_t next = head.find("\r\n", pos + 2);
      std::string line = head.substr(pos + 2, next == std::string::npos ? next : next - pos - 2);
      size_t colon = line.find(':');
      if (colon == std::string::npos) return false;
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      out->headers[name] = value;
      pos = next;
    }
    if (out->status == 100) return read(out);
    if (out->headers["transfer-encoding"] == "chunked") {
      for (;;) {
        std::string payload;
        if (!read_chunk(&payload)) return false;
        if (payload.empty()) break;  // the last chunk
        out->body += payload;
        out->chunks.push_back(std::move(payload));
      }
    } else {
      size_t length = std::stoul(
          out->headers.count("content-length") ? out->headers["content-length"] : std::string("0"));
      while (buf_.size() < length) {
        if (!fill()) return false;
      }
      out->body = buf_.substr(0, length);
      buf_.erase(0, length);
    }
    return true;
  }

  // Reads one chunk of a chunked body (after its header was read with read_header()).
  bool read_chunk(std::string* payload) {
    size_t eol;
    while ((eol = buf_.find("\r\n")) == std::string::npos) {
      if (!fill()) return false;
    }
    size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
    while (buf_.size() < eol + 2 + size + 2) {
      if (!fill()) return false;
    }
    if (buf_.compare(eol + 2 + size, 2, "\r\n") != 0) return false;  // framing error
    *payload = buf_.substr(eol + 2, size);
    buf_.erase(0, eol + 2 + size + 2);
    return true;
  }

  // Reads only the status line and headers; returns the status, or 0.
  int read_header() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return 0;
    }
    int status = std::stoi(buf_.substr(9, 3));
    buf_.erase(0, end + 4);
    return status;
  }

 private:
  bool fill() {
    char tmp[8192];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  std::string buf_;
};

inline std::string get(std::string_view path, std::string_view extra = "") {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) +
         "\r\n";
}

inline std::string post(std::string_view path, std::string_view body, std::string_view extra = "") {
  return std::string("POST ") + std::string(path) +
         " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

// One request on a fresh connection.
inline Response fetch(uint16_t port, const std::string& request) {
  Response r;
  int fd = connect_to(port);
  if (fd < 0) return r;
  Reader reader(fd);
  if (send_all(fd, request)) reader.read(&r);
  ::close(fd);
  return r;
}

// Waits until `pred` holds or `timeout` passes; returns pred().
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 3000ms) {
  auto deadline = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace tierserve::testing

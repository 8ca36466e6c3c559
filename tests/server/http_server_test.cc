// HttpServer over real loopback sockets, with a small blocking HTTP/1.1 client written on POSIX
// sockets so that tests can send exactly the bytes they want (partial, garbage, oversized).
#include "server/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "tests/server/http_client.h"

namespace tierserve {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::closed_within;
using testing::connect_to;
using testing::eventually;
using testing::fetch;
using testing::get;
using testing::post;
using testing::Reader;
using testing::Response;
using testing::send_all;

// ---- fixture -------------------------------------------------------------------------------

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerOptions options() {
    HttpServerOptions o;
    o.port = 0;
    o.threads = 2;
    return o;
  }

  void start(const HttpServerOptions& o) {
    auto server = HttpServer::create(o);
    ASSERT_TRUE(server.is_ok()) << server.status().to_string();
    server_ = std::move(server).value();
    server_->route("GET", "/hello", [](const HttpRequest& req, auto responder) {
      responder->respond(200, "text/plain", "hello " + req.target, {{"X-Path", req.path}});
    });
    server_->route("POST", "/echo", [](const HttpRequest& req, auto responder) {
      responder->respond(200, "text/plain", req.body + "|" + req.header("x-test"));
    });
    server_->route("GET", "/v1/models", [](const HttpRequest&, auto responder) {
      responder->respond(200, "application/json", R"({"data": []})");
    });
    for (auto& [method, path, handler] : extra_routes_) server_->route(method, path, handler);
    server_->start();
    port_ = server_->port();
  }

  void TearDown() override {
    if (server_) server_->stop(0ms);
    std::lock_guard lock(threads_mu_);
    for (auto& t : threads_) t.join();
  }

  // Runs `fn` on a new thread (as an engine would answer), joined in TearDown.
  void spawn(std::function<void()> fn) {
    std::lock_guard lock(threads_mu_);
    threads_.emplace_back(std::move(fn));
  }

  std::vector<std::tuple<std::string, std::string, HttpHandler>> extra_routes_;
  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;  // joined in TearDown, after the server stopped
};

nlohmann::json parse_json(const std::string& s) {
  return nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
}

// The OpenAI error shape, with code = the HTTP status (as the API routes send it) and vLLM's
// type name.
void expect_openai_error(const Response& r, int status, const std::string& type) {
  EXPECT_EQ(r.status, status);
  EXPECT_EQ(r.headers.at("content-type"), "application/json");
  auto j = parse_json(r.body);
  ASSERT_TRUE(j.is_object()) << r.body;
  ASSERT_TRUE(j.contains("error")) << r.body;
  const auto& e = j["error"];
  EXPECT_TRUE(e["message"].is_string()) << r.body;
  EXPECT_EQ(e["type"], type) << r.body;
  EXPECT_TRUE(e.contains("param") && e["param"].is_null()) << r.body;
  EXPECT_EQ(e["code"], status) << r.body;
}

// ---- options and binding -------------------------------------------------------------------

TEST(HttpServerOptionsTest, ValidateRejectsBadValues) {
  HttpServerOptions o;
  EXPECT_TRUE(o.validate().is_ok());
  o.threads = 0;
  EXPECT_FALSE(o.validate().is_ok());
  o = HttpServerOptions();
  o.read_timeout = 0ms;
  EXPECT_FALSE(o.validate().is_ok());
  o = HttpServerOptions();
  o.host = "";
  EXPECT_FALSE(o.validate().is_ok());
}

TEST(HttpServerCreateTest, BindErrorsNameHostAndPort) {
  HttpServerOptions o;
  o.port = 0;
  auto first = HttpServer::create(o);
  ASSERT_TRUE(first.is_ok());
  o.port = first.value()->port();
  auto second = HttpServer::create(o);
  ASSERT_FALSE(second.is_ok());
  EXPECT_NE(second.status().message().find("127.0.0.1:" + std::to_string(o.port)),
            std::string::npos)
      << second.status().message();
  o.host = "not-an-address";
  auto bad = HttpServer::create(o);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("not-an-address"), std::string::npos);
}

// ---- routing -------------------------------------------------------------------------------

TEST_F(HttpServerTest, RoutesByPathAndMethod) {
  start(options());
  Response r = fetch(port_, get("/hello?x=1"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello /hello?x=1");
  EXPECT_EQ(r.headers["x-path"], "/hello");
  EXPECT_EQ(r.headers["content-type"], "text/plain");

  r = fetch(port_, post("/echo", "payload", "X-Test: abc\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "payload|abc");

  expect_openai_error(fetch(port_, get("/nope")), 404, "NotFoundError");
  r = fetch(port_, post("/hello", "x"));
  expect_openai_error(r, 405, "MethodNotAllowedError");
  EXPECT_EQ(r.headers["allow"], "GET");
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start(options());
  int fd = connect_to(port_);
  ASSERT_GE(fd, 0);
  Reader reader(fd);
  // Two pipelined requests, then one more after reading them.
  ASSERT_TRUE(send_all(fd, get("/hello?a") + post("/echo", "b")));
  Response r;
  ASSERT_TRUE(reader.read(&r));
  EXPECT_EQ(r.body, "hello /hello?a");
  EXPECT_EQ(r.headers["connection"], "keep-alive");
  ASSERT_TRUE(reader.read(&r));
  EXPECT_EQ(r.body, "b|");
  ASSERT_TRUE(send_all(fd, get("/hello?c")));
  ASSERT_TRUE(reader.read(&r));
  EXPECT_EQ(r.body, "hello /hello?c");
  EXPECT_EQ(server_->open_connections(), 1);
  // Connection: close is honoured.
  ASSERT_TRUE(send_all(fd, get("/hello?d", "Connection: close\r\n")));
  ASSERT_TRUE(reader.read(&r));
  EXPECT_EQ(r.headers["connection"], "close");
  EXPECT_TRUE(closed_within(fd, 2000ms));
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
  EXPECT_EQ(server_->requests_in_flight(), 0);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  start(options());
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd,
                       "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                       "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(reader.read_header(), 100);
  ASSERT_TRUE(send_all(fd, "abc"));
  Response r;
  ASSERT_TRUE(reader.read(&r));
  EXPECT_EQ(r.body, "abc|");
  ::close(fd);
}

TEST_F(HttpServerTest, HandlerThatDropsItsResponderAnswers500) {
  extra_routes_.emplace_back("GET", "/drop", [](const HttpRequest&, auto) {});
  start(options());
  Response r = fetch(port_, get("/drop"));
  expect_openai_error(r, 500, "InternalServerError");
  EXPECT_TRUE(eventually([&] { return server_->requests_in_flight() == 0; }));
}

// ---- limits --------------------------------------------------------------------------------

TEST_F(HttpServerTest, BodyOverLimitGets413AndServerStaysHealthy) {
  auto o = options();
  o.max_body_bytes = 1000;
  start(o);
  // Declared length over the limit: rejected before the body is read.
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
                               std::string(2000, 'a')));
  Response r;
  ASSERT_TRUE(reader.read(&r));
  expect_openai_error(r, 413, "PayloadTooLargeError");
  EXPECT_EQ(r.headers["connection"], "close");
  EXPECT_TRUE(closed_within(fd, 3000ms));
  ::close(fd);
  // A chunked body that grows over the limit.
  std::string chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "190\r\n" + std::string(400, 'b') + "\r\n";
  chunked += "0\r\n\r\n";
  expect_openai_error(fetch(port_, chunked), 413, "PayloadTooLargeError");
  // At the limit is fine.
  Response ok = fetch(port_, post("/echo", std::string(1000, 'c')));
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body.size(), 1001u);
}

TEST_F(HttpServerTest, OversizedHeaderGets431) {
  auto o = options();
  o.max_header_bytes = 1024;
  start(o);
  Response r = fetch(port_, get("/hello", "X-Big: " + std::string(4000, 'h') + "\r\n"));
  expect_openai_error(r, 431, "RequestHeaderFieldsTooLargeError");
  EXPECT_EQ(fetch(port_, get("/hello")).status, 200);
}

TEST_F(HttpServerTest, MalformedRequestsGet400) {
  start(options());
  expect_openai_error(fetch(port_, "\x01\x02garbage\r\n\r\n"), 400, "BadRequestError");
  expect_openai_error(
      fetch(port_, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nxyz"), 400,
      "BadRequestError");
  expect_openai_error(
      fetch(port_, "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"), 400,
      "BadRequestError");
  EXPECT_EQ(fetch(port_, get("/hello")).status, 200);
}

TEST_F(HttpServerTest, StalledPartialRequestIsClosedWhileOthersAreServed) {
  auto o = options();
  o.read_timeout = 300ms;
  start(o);
  int slow = connect_to(port_);
  ASSERT_TRUE(send_all(slow, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"));
  auto begin = Clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(fetch(port_, get("/hello")).status, 200);
  EXPECT_TRUE(closed_within(slow, 3000ms));
  auto elapsed = Clock::now() - begin;
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 2000ms);
  ::close(slow);
  // A connection that never sends a byte is closed by the same deadline.
  int silent = connect_to(port_);
  EXPECT_TRUE(closed_within(silent, 3000ms));
  ::close(silent);
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosedAfterIdleTimeout) {
  auto o = options();
  o.idle_timeout = 300ms;
  start(o);
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd, get("/hello")));
  Response r;
  ASSERT_TRUE(reader.read(&r));
  EXPECT_FALSE(closed_within(fd, 150ms));
  EXPECT_TRUE(closed_within(fd, 2000ms));
  ::close(fd);
}

TEST_F(HttpServerTest, ClientThatStopsReadingIsClosedAfterWriteTimeout) {
  auto o = options();
  o.write_timeout = 300ms;
  std::atomic<int> cancels{0};
  std::shared_ptr<HttpResponder> held;  // the stream stays open: the handler has not finished
  extra_routes_.emplace_back("GET", "/flood", [&](const HttpRequest&, auto responder) {
    responder->on_cancel([&] { cancels.fetch_add(1); });
    responder->start_stream();
    // Far more than the loopback socket buffers hold.
    for (int i = 0; i < 256; ++i) responder->send_event(std::string(256 << 10, 'x'));
    held = responder;
  });
  start(o);
  int fd = connect_to(port_);
  ASSERT_TRUE(send_all(fd, get("/flood")));
  ASSERT_TRUE(eventually([&] { return cancels.load() == 1; }, 5000ms));
  EXPECT_EQ(server_->requests_in_flight(), 0);
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
  ::close(fd);
  EXPECT_EQ(fetch(port_, get("/hello")).status, 200);
}

// ---- auth ----------------------------------------------------------------------------------

TEST_F(HttpServerTest, V1PathsNeedTheBearerKey) {
  auto o = options();
  o.api_key = "sk-secret";
  start(o);
  for (const std::string& auth :
       {std::string(""), std::string("Authorization: Bearer sk-wrong\r\n"),
        std::string("Authorization: Bearer sk-secret-but-longer\r\n"),
        std::string("Authorization: Bearer sk\r\n"), std::string("Authorization: sk-secret\r\n"),
        std::string("Authorization: Bearer \r\n")}) {
    Response r = fetch(port_, get("/v1/models", auth));
    EXPECT_EQ(r.status, 401) << auth;
    EXPECT_EQ(r.body, R"({"error": "Unauthorized"})") << auth;
  }
  // Unknown /v1/ paths are not revealed without the key.
  EXPECT_EQ(fetch(port_, get("/v1/nope")).status, 401);
  EXPECT_EQ(fetch(port_, get("/v1/models", "Authorization: Bearer sk-secret\r\n")).status, 200);
  EXPECT_EQ(fetch(port_, get("/v1/models", "authorization: bearer sk-secret\r\n")).status, 200);
  // Paths outside /v1/ need no key.
  EXPECT_EQ(fetch(port_, get("/hello")).status, 200);
}

// ---- streaming -----------------------------------------------------------------------------

TEST_F(HttpServerTest, StreamsEventsFromAnotherThreadInOrder) {
  extra_routes_.emplace_back("GET", "/stream", [this](const HttpRequest&, auto responder) {
    spawn([responder] {
      responder->start_stream();
      for (int i = 0; i < 100; ++i) {
        responder->send_event("{\"i\": " + std::to_string(i) + "}");
        if (i % 10 == 0) std::this_thread::sleep_for(1ms);
      }
      responder->send_event("[DONE]");
      responder->end_stream();
    });
  });
  start(options());
  int fd = connect_to(port_);
  Reader reader(fd);
  for (int round = 0; round < 2; ++round) {  // the connection is reusable after a stream
    ASSERT_TRUE(send_all(fd, get("/stream")));
    Response r;
    ASSERT_TRUE(reader.read(&r));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "text/event-stream");
    EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
    ASSERT_EQ(r.chunks.size(), 101u);
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(r.chunks[i], "data: {\"i\": " + std::to_string(i) + "}\n\n");
    }
    EXPECT_EQ(r.chunks[100], "data: [DONE]\n\n");
  }
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server_->requests_in_flight() == 0; }));
}

// A handler that streams until cancelled, recording when on_cancel ran.
struct CancelProbe {
  std::atomic<bool> cancelled{false};
  std::atomic<int> cancel_calls{0};
  std::atomic<int> events_after_cancel{0};
  std::atomic<bool> finished{false};
};

TEST_F(HttpServerTest, ClientDisconnectDuringStreamCancelsPromptly) {
  auto probe = std::make_shared<CancelProbe>();
  extra_routes_.emplace_back("GET", "/forever", [this, probe](const HttpRequest&, auto responder) {
    responder->on_cancel([probe] {
      probe->cancel_calls.fetch_add(1);
      probe->cancelled.store(true);
    });
    spawn([responder, probe] {
      responder->start_stream();
      for (int i = 0; i < 2000 && probe->events_after_cancel.load() < 20; ++i) {
        responder->send_event("tick");  // ignored once cancelled
        if (responder->cancelled()) probe->events_after_cancel.fetch_add(1);
        std::this_thread::sleep_for(1ms);
      }
      probe->finished.store(true);
    });
  });
  start(options());
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd, get("/forever")));
  ASSERT_EQ(reader.read_header(), 200);
  std::string event;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(reader.read_chunk(&event));
    EXPECT_EQ(event, "data: tick\n\n");
  }
  ::close(fd);
  auto closed_at = Clock::now();
  ASSERT_TRUE(eventually([&] { return probe->cancelled.load(); }, 2000ms));
  EXPECT_LT(Clock::now() - closed_at, 500ms);
  ASSERT_TRUE(eventually([&] { return probe->finished.load(); }, 5000ms));
  EXPECT_EQ(probe->cancel_calls.load(), 1);
  EXPECT_EQ(probe->events_after_cancel.load(), 20);
  EXPECT_EQ(server_->requests_in_flight(), 0);
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpServerTest, ClientDisconnectWhileWaitingCancelsAndLateRespondIsIgnored) {
  std::shared_ptr<HttpResponder> held;
  std::mutex mu;
  std::atomic<int> cancels{0};
  extra_routes_.emplace_back("GET", "/wait", [&](const HttpRequest&, auto responder) {
    responder->on_cancel([&] { cancels.fetch_add(1); });
    std::lock_guard lock(mu);
    held = responder;
  });
  start(options());
  int fd = connect_to(port_);
  ASSERT_TRUE(send_all(fd, get("/wait")));
  ASSERT_TRUE(eventually([&] { return server_->requests_in_flight() == 1; }));
  ::close(fd);
  ASSERT_TRUE(eventually([&] { return cancels.load() == 1; }, 2000ms));
  std::lock_guard lock(mu);
  EXPECT_TRUE(held->cancelled());
  held->respond(200, "text/plain", "too late");  // ignored
  int late_calls = 0;
  held->on_cancel([&] { ++late_calls; });  // set after the fact: runs at once
  EXPECT_EQ(late_calls, 1);
  EXPECT_EQ(cancels.load(), 1);
  EXPECT_EQ(server_->requests_in_flight(), 0);
  held.reset();
}

// ---- stress --------------------------------------------------------------------------------

// Answers requests from its own thread after a random delay, like the engine thread.
class FakeEngine {
 public:
  FakeEngine() : thread_([this] { run(); }) {}
  ~FakeEngine() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  enum class Kind {
    kRespond,       // respond() once
    kStream,        // a whole stream of 5 events
    kFinishStream,  // 5 events and the end of a stream the handler started
  };
  void enqueue(std::shared_ptr<HttpResponder> responder, std::chrono::milliseconds delay,
               Kind kind) {
    std::lock_guard lock(mu_);
    jobs_.push_back({Clock::now() + delay, std::move(responder), kind});
    cv_.notify_all();
  }

 private:
  struct Job {
    Clock::time_point due;
    std::shared_ptr<HttpResponder> responder;
    Kind kind;
  };
  void run() {
    std::unique_lock lock(mu_);
    while (!done_) {
      auto now = Clock::now();
      for (auto it = jobs_.begin(); it != jobs_.end();) {
        if (it->due > now) {
          ++it;
          continue;
        }
        auto job = std::move(*it);
        it = jobs_.erase(it);
        if (job.kind == Kind::kRespond) {
          job.responder->respond(200, "text/plain", "done");
          continue;
        }
        if (job.kind == Kind::kStream) job.responder->start_stream();
        for (int i = 0; i < 5; ++i) job.responder->send_event(std::to_string(i));
        job.responder->end_stream();
      }
      cv_.wait_for(lock, 1ms);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool done_ = false;
  std::thread thread_;
};

TEST_F(HttpServerTest, ConcurrentClientsWithDisconnectsAndGarbage) {
  auto engine = std::make_shared<FakeEngine>();
  std::atomic<int> handled{0}, cancels{0};
  auto add = [&](const std::string& path, int min_ms, int max_ms, bool stream) {
    extra_routes_.emplace_back(
        "POST", path, [=, &handled, &cancels](const HttpRequest&, auto responder) {
          handled.fetch_add(1);
          responder->on_cancel([&cancels] { cancels.fetch_add(1); });
          thread_local std::mt19937 rng(std::random_device{}());
          int delay = std::uniform_int_distribution<int>(min_ms, max_ms)(rng);
          engine->enqueue(responder, std::chrono::milliseconds(delay),
                          stream ? FakeEngine::Kind::kStream : FakeEngine::Kind::kRespond);
        });
  };
  add("/fast", 0, 20, false);
  add("/fast_stream", 0, 20, true);
  add("/slow", 400, 600, false);  // clients of /slow always leave before the answer
  extra_routes_.emplace_back("POST", "/slow_stream", [&](const HttpRequest&, auto responder) {
    handled.fetch_add(1);
    responder->on_cancel([&cancels] { cancels.fetch_add(1); });
    responder->start_stream();
    responder->send_event("first");
    // The engine finishes it later (events after the client left are ignored).
    engine->enqueue(responder, 500ms, FakeEngine::Kind::kFinishStream);
  });
  auto o = options();
  o.max_body_bytes = 4096;
  o.read_timeout = 2000ms;
  start(o);

  constexpr int kRequests = 200, kConcurrency = 50;
  std::atomic<int> next{0}, ok{0}, rejected{0}, left{0}, failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kConcurrency; ++c) {
    clients.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < kRequests;) {
        int fd = connect_to(port_);
        if (fd < 0) {
          failures.fetch_add(1);
          continue;
        }
        Reader reader(fd);
        Response r;
        switch (i % 3) {
          case 0: {  // well-behaved
            bool stream = i % 2 == 0;
            send_all(fd, post(stream ? "/fast_stream" : "/fast", "{}"));
            if (reader.read(&r) && r.status == 200 &&
                r.body ==
                    (stream ? "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n" : "done")) {
              ok.fetch_add(1);
            } else {
              failures.fetch_add(1);
            }
            break;
          }
          case 1:  // disconnects midway: while waiting, or in the middle of a stream
            if (i % 2 == 0) {
              send_all(fd, post("/slow_stream", "{}"));
              std::string event;
              if (reader.read_header() != 200 || !reader.read_chunk(&event) ||
                  event != "data: first\n\n") {
                failures.fetch_add(1);
              }
            } else {
              send_all(fd, post("/slow", "{}"));
              std::this_thread::sleep_for(std::chrono::milliseconds(10 + i % 20));
            }
            left.fetch_add(1);
            break;
          case 2: {  // malformed or oversized
            static const std::string kBad[] = {
                "\x16\x03\x01garbage bytes\r\n\r\n",
                "POST /fast HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                "POST /fast HTTP/1.1\r\nContent-Length: 99999\r\n\r\n" + std::string(5000, 'z'),
                "GET /" + std::string(20000, 'p') + " HTTP/1.1\r\n\r\n",
            };
            send_all(fd, kBad[(i / 3) % 4]);
            if (reader.read(&r) && r.status >= 400 && r.status < 500) {
              rejected.fetch_add(1);
            } else {
              failures.fetch_add(1);
            }
            break;
          }
        }
        ::close(fd);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ok.load() + left.load() + rejected.load(), kRequests);
  EXPECT_EQ(left.load(), (kRequests + 1) / 3);  // i % 3 == 1
  // Every client that left was cancelled, and no one else.
  EXPECT_TRUE(eventually([&] { return cancels.load() == left.load(); }));
  EXPECT_EQ(cancels.load(), left.load());
  EXPECT_EQ(handled.load(), ok.load() + left.load());
  EXPECT_TRUE(eventually([&] { return server_->requests_in_flight() == 0; }));
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
  EXPECT_EQ(fetch(port_, post("/fast", "{}")).body, "done");
  server_->stop(0ms);  // before the engine goes, so no responder is left with it
  engine.reset();
}

// ---- shutdown ------------------------------------------------------------------------------

TEST_F(HttpServerTest, StopLetsARunningStreamFinishAndRefusesNewConnections) {
  std::atomic<int> cancels{0};
  extra_routes_.emplace_back("GET", "/stream", [&, this](const HttpRequest&, auto responder) {
    responder->on_cancel([&] { cancels.fetch_add(1); });
    spawn([responder] {
      responder->start_stream();
      for (int i = 0; i < 20; ++i) {
        responder->send_event(std::to_string(i));
        std::this_thread::sleep_for(15ms);
      }
      responder->end_stream();
    });
  });
  start(options());
  int idle = connect_to(port_);  // an idle keep-alive connection: closed at once by stop()
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd, get("/stream")));
  ASSERT_EQ(reader.read_header(), 200);
  std::string event;
  ASSERT_TRUE(reader.read_chunk(&event));

  auto stop_began = Clock::now();
  std::thread stopper([&] { server_->stop(5000ms); });
  EXPECT_TRUE(closed_within(idle, 1000ms));
  ::close(idle);
  // New connections are refused while the stream still runs.
  EXPECT_TRUE(eventually(
      [&] {
        int probe = connect_to(port_);
        if (probe >= 0) ::close(probe);
        return probe < 0;
      },
      200ms));
  int received = 1;
  for (;;) {
    ASSERT_TRUE(reader.read_chunk(&event));
    if (event.empty()) break;
    EXPECT_EQ(event, "data: " + std::to_string(received) + "\n\n");
    ++received;
  }
  EXPECT_EQ(received, 20);
  EXPECT_TRUE(closed_within(fd, 1000ms));
  ::close(fd);
  stopper.join();
  EXPECT_LT(Clock::now() - stop_began, 3000ms);
  EXPECT_EQ(cancels.load(), 0);
  EXPECT_EQ(server_->requests_in_flight(), 0);
  EXPECT_EQ(server_->open_connections(), 0);
}

TEST_F(HttpServerTest, StopCancelsWhatOutlivesTheGrace) {
  std::atomic<int> cancels{0};
  std::shared_ptr<HttpResponder> held;
  extra_routes_.emplace_back("GET", "/hang", [&](const HttpRequest&, auto responder) {
    responder->on_cancel([&] { cancels.fetch_add(1); });
    responder->start_stream();
    held = responder;
  });
  start(options());
  int fd = connect_to(port_);
  Reader reader(fd);
  ASSERT_TRUE(send_all(fd, get("/hang")));
  ASSERT_EQ(reader.read_header(), 200);
  auto begin = Clock::now();
  server_->stop(200ms);
  auto took = Clock::now() - begin;
  EXPECT_GE(took, 190ms);
  EXPECT_LT(took, 2000ms);
  EXPECT_EQ(cancels.load(), 1);
  EXPECT_TRUE(held->cancelled());
  held->send_event("ignored");  // after stop: ignored, no crash
  held->end_stream();
  EXPECT_TRUE(closed_within(fd, 1000ms));
  ::close(fd);
  EXPECT_EQ(server_->requests_in_flight(), 0);
}

// Handlers answer from their own threads at the moment the server is destroyed: a posting thread
// must be out of asio before the io_context goes (caught by ASan/UBSan as a destroyed strand
// service when it is not).
TEST_F(HttpServerTest, RespondingWhileTheServerIsDestroyed) {
  constexpr int kRounds = 40, kClients = 8;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> handled{0};
    std::atomic<bool> go{false};
    std::mutex mu;
    std::vector<std::thread> answerers;
    extra_routes_.clear();
    extra_routes_.emplace_back("GET", "/answer", [&](const HttpRequest&, auto responder) {
      std::lock_guard lock(mu);
      answerers.emplace_back([&go, responder] {
        while (!go.load()) std::this_thread::yield();
        responder->respond(200, "text/plain", "late");
      });
      handled.fetch_add(1);
    });
    start(options());
    std::vector<int> fds;
    for (int c = 0; c < kClients; ++c) {
      int fd = connect_to(port_);
      ASSERT_GE(fd, 0);
      ASSERT_TRUE(send_all(fd, get("/answer")));
      fds.push_back(fd);
    }
    ASSERT_TRUE(eventually([&] { return handled.load() == kClients; }, 2000ms));
    go.store(true);
    server_.reset();  // stop(0) and destroy, racing the answers
    for (auto& t : answerers) t.join();
    for (int fd : fds) ::close(fd);
  }
}

TEST_F(HttpServerTest, WaitForSignalReturnsTheSignal) {
  auto o = options();
  o.stop_signals = {SIGUSR2};
  start(o);
  ::raise(SIGUSR2);
  EXPECT_EQ(server_->wait_for_signal(), SIGUSR2);
  server_->stop(0ms);
  EXPECT_EQ(server_->wait_for_signal(), SIGUSR2);
}

TEST_F(HttpServerTest, WaitForSignalReturnsZeroWhenStopped) {
  start(options());
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    server_->stop(0ms);
  });
  EXPECT_EQ(server_->wait_for_signal(), 0);
  stopper.join();
}

}  // namespace
}  // namespace tierserve

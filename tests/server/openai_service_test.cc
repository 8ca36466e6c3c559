// OpenAiService over a real HttpServer on loopback: 503 (with Retry-After) while the model loads
// and when more requests would wait than --max-queue allows; the queue slots come back when a
// request ends, whether it completes or its client goes away. The full API is driven end to end
// by the openai npm client (openai_client_test.mjs).
#include "server/openai_service.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/server/http_client.h"

namespace tierserve {
namespace {

using namespace std::chrono_literals;
using testing::connect_to;
using testing::eventually;
using testing::fetch;
using testing::get;
using testing::post;
using testing::Reader;
using testing::Response;
using testing::send_all;

class OpenAiServiceTest : public ::testing::Test {
 protected:
  // Starts a server whose service has no engine yet (loading).
  void start(int64_t max_running, int64_t max_queue) {
    HttpServerOptions ho;
    ho.port = 0;
    auto server = HttpServer::create(ho);
    ASSERT_TRUE(server.is_ok()) << server.status().to_string();
    server_ = std::move(server).value();
    OpenAiServiceOptions so;
    so.model_dir = TIERSERVE_DEMO_MODEL;
    so.served_model_names = {"demo"};
    so.max_running = max_running;
    so.max_queue = max_queue;
    service_ = std::make_unique<OpenAiService>(so);
    service_->add_routes(server_.get());
    server_->start();
    port_ = server_->port();
  }

  // Loads the demo model (running one sequence at a time, so that requests wait in turn) and
  // hands it to the service.
  void load() {
    auto tokenizer = Tokenizer::load(TIERSERVE_DEMO_MODEL);
    ASSERT_TRUE(tokenizer.is_ok()) << tokenizer.status().to_string();
    EngineOptions eo;
    eo.max_model_len = 512;
    eo.kv_cache_memory_bytes = 64 << 20;
    eo.max_num_seqs = 1;
    auto engine = LlmEngine::create(TIERSERVE_DEMO_MODEL, eo);
    ASSERT_TRUE(engine.is_ok()) << engine.status().to_string();
    engine_ = std::move(engine).value();
    engine_->start();
    service_->set_engine(engine_.get(), std::move(tokenizer).value());
  }

  void TearDown() override {
    if (server_) server_->stop(0ms);
    if (engine_) engine_->stop();
  }

  static std::string completion(const std::string& fields) {
    const std::string body =
        R"({"model": "demo", "prompt": "This program is free software", )" + fields + "}";
    return post("/v1/completions", body, "Content-Type: application/json\r\n");
  }

  static void expect_503(const Response& r, const std::string& message) {
    EXPECT_EQ(r.status, 503) << r.body;
    EXPECT_FALSE(r.headers.count("retry-after") == 0) << "Retry-After";
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["code"], 503);
    EXPECT_EQ(j["error"]["type"], "ServiceUnavailableError");
    EXPECT_NE(j["error"]["message"].get<std::string>().find(message), std::string::npos) << r.body;
  }

  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<OpenAiService> service_;
  std::unique_ptr<LlmEngine> engine_;
  uint16_t port_ = 0;
};

TEST_F(OpenAiServiceTest, LoadingAnswers503ThenServes) {
  start(8, 8);
  expect_503(fetch(port_, get("/health")), "loading");
  expect_503(fetch(port_, get("/v1/models")), "loading");
  expect_503(fetch(port_, completion(R"("max_tokens": 2)")), "loading");
  EXPECT_EQ(fetch(port_, get("/version")).status, 200);
  EXPECT_EQ(fetch(port_, get("/metrics")).status, 200);
  load();
  EXPECT_EQ(fetch(port_, get("/health")).status, 200);
  Response r = fetch(port_, completion(R"("max_tokens": 2)"));
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(OpenAiServiceTest, FullQueueAnswers503AndFreesSlotsWhenRequestsEnd) {
  start(/*max_running=*/1, /*max_queue=*/1);
  load();
  // Two long streams fill the running slot and the one queue slot.
  const std::string long_stream = completion(R"("max_tokens": 500, "ignore_eos": true,
                                                 "stream": true)");
  int a = connect_to(port_), b = connect_to(port_);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_TRUE(send_all(a, long_stream));
  ASSERT_TRUE(send_all(b, long_stream));
  ASSERT_TRUE(eventually([&] { return service_->queued_requests() == 2; }));
  expect_503(fetch(port_, completion(R"("max_tokens": 2)")), "queue is full");
  // A request with more prompts than the free slots is refused whole.
  ::close(b);  // its client goes away: the slot comes back
  ASSERT_TRUE(eventually([&] { return service_->queued_requests() == 1; }));
  expect_503(fetch(port_, completion(R"("max_tokens": 2, "prompt": ["a", "b"])")), "queue is full");
  // The first stream runs to its end; then everything is free, and a new request is served.
  Reader reader(a);
  Response streamed;
  ASSERT_TRUE(reader.read(&streamed));
  EXPECT_EQ(streamed.status, 200);
  EXPECT_NE(streamed.body.find("data: [DONE]"), std::string::npos);
  ::close(a);
  EXPECT_TRUE(eventually([&] { return service_->queued_requests() == 0; }));
  Response ok = fetch(port_, completion(R"("max_tokens": 2)"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

}  // namespace
}  // namespace tierserve

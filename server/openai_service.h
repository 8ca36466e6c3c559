// OpenAiService: the routes of `tierserve serve` (DESIGN.md §4): each request is parsed and
// validated on a server thread (server/openai_request.h), tokenized, and queued on the engine;
// its outputs come back on the engine thread (RequestStream's on_ready), are detokenized with
// stop strings, and are answered as one JSON response or as server-sent events
// (server/openai_response.h). A client that goes away aborts its requests at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/llm_engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"

namespace tierserve {

struct OpenAiServiceOptions {
  std::string model_dir;                        // for the chat template and /v1/models' root
  std::vector<std::string> served_model_names;  // at least one
  int64_t max_running = 256;                    // --max-num-seqs: requests that run at once
  int64_t max_queue = 1024;                     // --max-queue: requests that may wait beyond
                                                // them; 503 with Retry-After beyond
  bool use_generation_config = true;            // defaults from generation_config.json
                                                // (--generation-config auto), else OpenAI's
};

class OpenAiService {
 public:
  explicit OpenAiService(OpenAiServiceOptions options);
  ~OpenAiService();
  OpenAiService(const OpenAiService&) = delete;
  OpenAiService& operator=(const OpenAiService&) = delete;

  // Adds every route to `server` (before it starts). Until set_engine(), /health and the /v1
  // routes answer 503 (loading).
  void add_routes(HttpServer* server);
  // The loaded engine (running its loop) and the model's tokenizer; both outlive the service's
  // use. Requests are accepted from now on.
  void set_engine(LlmEngine* engine, std::unique_ptr<Tokenizer> tokenizer);
  // Engine requests (one per prompt) queued on the engine and not finished.
  int64_t queued_requests() const { return queued_.load(); }
  Metrics& metrics() { return metrics_; }

  struct Job;  // one HTTP request's generation (openai_service.cc)

 private:
  void completions(const HttpRequest& request, std::shared_ptr<HttpResponder> responder, bool chat);
  void tokenize(const HttpRequest& request, const std::shared_ptr<HttpResponder>& responder);
  void detokenize(const HttpRequest& request, const std::shared_ptr<HttpResponder>& responder);
  void metrics_route(const std::shared_ptr<HttpResponder>& responder);
  // A job that completed or was cancelled: no longer held.
  void forget(Job* job);
  // Answers 503 and returns false while loading.
  bool ready(const std::shared_ptr<HttpResponder>& responder) const;

  OpenAiServiceOptions options_;
  std::atomic<LlmEngine*> engine_{nullptr};
  std::unique_ptr<Tokenizer> tokenizer_;
  RequestDefaults defaults_;
  Metrics metrics_;
  std::atomic<int64_t> queued_{0};  // engine requests held by jobs (admission's count)
  std::mutex jobs_mu_;
  std::unordered_map<Job*, std::shared_ptr<Job>> jobs_;  // active jobs
  int64_t created_ = 0;
};

}  // namespace tierserve

#include "server/openai_service.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <span>
#include <utility>

#include "common/logging.h"
#include "common/version.h"
#include "engine/detokenizer.h"
#include "server/chat_prompt.h"
#include "server/openai_response.h"

namespace tierserve {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

void respond_error(const std::shared_ptr<HttpResponder>& responder, const ApiError& error,
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
  responder->respond(error.http_status, "application/json", error_json(error), std::move(headers));
}

void respond_json(const std::shared_ptr<HttpResponder>& responder, std::string body) {
  responder->respond(200, "application/json", std::move(body));
}

// The chunk builders return whole events ("data: <json>\n\n"); HttpResponder::send_event
// frames its argument itself, so it gets the payload only.
void send_framed(const std::shared_ptr<HttpResponder>& responder, const std::string& event) {
  constexpr std::string_view kPrefix = "data: ", kSuffix = "\n\n";
  TS_CHECK(event.size() >= kPrefix.size() + kSuffix.size() && event.starts_with(kPrefix) &&
           event.ends_with(kSuffix))
      << "not a server-sent event: " << event;
  responder->send_event(
      event.substr(kPrefix.size(), event.size() - kPrefix.size() - kSuffix.size()));
}

}  // namespace

// One HTTP request's generation: its prompts' engine requests and their choices. The server
// thread sets it up; afterwards only the engine thread (pump, through on_ready) and a server
// thread (cancel) touch it, under `mu`.
struct OpenAiService::Job : std::enable_shared_from_this<Job> {
  struct Choice {
    std::unique_ptr<StreamingDetokenizer> detok;
    std::string text;                // non-streamed: the whole text
    std::vector<int32_t> token_ids;  // generated ids
    std::vector<TokenLogprob> logprobs;
    std::string finish_reason;
    StopReason stop_reason;
    bool role_sent = false;
    bool done = false;
  };

  OpenAiService* service = nullptr;
  LlmEngine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  std::shared_ptr<HttpResponder> responder;
  bool chat = false;
  GenerationOptions options;
  ResponseMeta meta;
  int32_t n = 1;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // completions with echo
  std::vector<Choice> choices;            // prompt index * n + output index
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<int32_t> cached_tokens;  // per prompt
  Clock::time_point arrival = Clock::now();
  Clock::time_point last_token;
  bool any_token = false;
  int64_t completion_tokens = 0;
  std::optional<ApiError> error;
  std::mutex mu;
  bool finished = false;

  // Engine thread: takes every available output and answers what became final.
  void pump() {
    const std::shared_ptr<Job> self = shared_from_this();  // outlives the unlock below
    std::lock_guard<std::mutex> lock(mu);
    if (finished) return;
    for (size_t p = 0; p < streams.size(); ++p) {
      while (auto out = streams[p]->poll()) handle(p, *out);
    }
    if (std::all_of(choices.begin(), choices.end(), [](const Choice& c) { return c.done; })) {
      complete();
    }
  }

  void handle(size_t p, const RequestOutput& out) {
    Choice& c = choices[p * static_cast<size_t>(n) + static_cast<size_t>(out.index)];
    if (c.done) return;  // stopped by a stop string; the engine's rest is dropped
    std::string delta;
    std::vector<int32_t> new_ids;
    std::vector<TokenLogprob> new_logprobs;
    const Clock::time_point now = Clock::now();
    if (out.queue_seconds >= 0) service->metrics_.observe_request_queue_time(out.queue_seconds);
    for (size_t i = 0; i < out.token_ids.size() && !c.done; ++i) {
      const int32_t t = out.token_ids[i];
      if (!any_token) {
        service->metrics_.observe_time_to_first_token(seconds_between(arrival, now));
        any_token = true;
      } else {
        service->metrics_.observe_inter_token_latency(seconds_between(last_token, now));
      }
      last_token = now;
      ++completion_tokens;
      c.token_ids.push_back(t);
      new_ids.push_back(t);
      if (options.logprobs && i < out.logprobs.size()) {
        auto piece = tokenizer->decode(std::span<const int32_t>(&t, 1), false);
        new_logprobs.push_back(
            {piece.is_ok() ? piece.value() : std::string(), out.logprobs[i], {}});
      }
      delta += c.detok->add(t);
      if (c.detok->stopped()) {
        c.done = true;
        c.finish_reason = "stop";
        // With one output, nothing else needs the request: stop generating at once.
        if (n == 1) engine->abort(streams[p]->request_id());
      }
    }
    if (out.finished && !c.done) {
      delta += c.detok->finish();
      c.done = true;
      c.finish_reason = out.finish_reason;
      if (out.finish_reason == "error" && !error) {
        error = api_error_from_status(out.error);
      }
      if (out.finish_reason == "stop" && !c.token_ids.empty()) {
        const int32_t last = c.token_ids.back();
        const auto& ids = options.params.stop_token_ids;
        if (std::find(ids.begin(), ids.end(), last) != ids.end()) c.stop_reason.token_id = last;
      }
    }
    if (out.finished) cached_tokens[p] = std::max(cached_tokens[p], out.num_cached_tokens);
    if (options.logprobs) {
      c.logprobs.insert(c.logprobs.end(), new_logprobs.begin(), new_logprobs.end());
    }
    if (!options.stream) {
      c.text += delta;
      return;
    }
    if (error) return;  // reported once, at completion
    const int32_t index = static_cast<int32_t>(&c - choices.data());
    if (chat && !c.role_sent && (!new_ids.empty() || c.done)) {
      send_framed(responder, chat_role_chunk(meta, index, nullptr));
      c.role_sent = true;
    }
    if (delta.empty() && !c.done && new_ids.empty()) return;
    StreamDelta d;
    d.index = index;
    d.text = std::move(delta);
    d.token_ids = std::move(new_ids);
    if (options.logprobs) d.logprobs = std::move(new_logprobs);
    if (c.done) {
      d.finish_reason = c.finish_reason;
      d.stop_reason = c.stop_reason;
    }
    const std::vector<int32_t>* prompt_ids =
        options.return_token_ids && c.token_ids.size() == d.token_ids.size() ? &prompts[p]
                                                                             : nullptr;
    send_framed(responder,
                chat ? chat_delta_chunk(meta, d, options.return_token_ids)
                     : completion_delta_chunk(meta, d, options.return_token_ids, prompt_ids));
  }

  Usage usage() const {
    Usage u;
    for (const auto& p : prompts) u.prompt_tokens += static_cast<int64_t>(p.size());
    u.completion_tokens = completion_tokens;
    int64_t cached = 0;
    for (int32_t c : cached_tokens) cached += c;
    u.cached_tokens = cached;
    return u;
  }

  // Every choice is done: the final answer.
  void complete() {
    finished = true;
    service->forget(this);
    Metrics& m = service->metrics_;
    m.observe_e2e_request_latency(seconds_between(arrival, Clock::now()));
    m.add_generation_tokens(completion_tokens);
    const Usage u = usage();
    if (options.stream) {
      if (error) {
        send_framed(responder, sse_error_event(*error));
      } else if (options.include_usage) {
        send_framed(responder, usage_chunk(meta, u, chat));
      }
      send_framed(responder, sse_done());
      responder->end_stream();
    } else if (error) {
      respond_error(responder, *error);
    } else {
      std::vector<ChoiceOutput> outs;
      for (size_t i = 0; i < choices.size(); ++i) {
        Choice& c = choices[i];
        ChoiceOutput o;
        o.index = static_cast<int32_t>(i);
        o.text = options.echo && !chat ? prompt_texts[i / static_cast<size_t>(n)] + c.text : c.text;
        o.finish_reason = c.finish_reason;
        o.stop_reason = c.stop_reason;
        o.token_ids = c.token_ids;
        o.prompt_token_ids = prompts[i / static_cast<size_t>(n)];
        if (options.logprobs) o.logprobs = c.logprobs;
        outs.push_back(std::move(o));
      }
      respond_json(responder,
                   chat ? chat_completion_response_json(
                              meta, outs, u, options.return_token_ids ? &prompts[0] : nullptr)
                        : completion_response_json(meta, outs, u, options.return_token_ids));
    }
    for (const Choice& c : choices) m.inc_request_success(error ? "error" : c.finish_reason);
  }

  // A server thread: the client went away.
  void cancel() {
    const std::shared_ptr<Job> self = shared_from_this();  // outlives the unlock below
    std::lock_guard<std::mutex> lock(mu);
    if (finished) return;
    finished = true;
    service->forget(this);
    for (const auto& s : streams) engine->abort(s->request_id());
    service->metrics_.inc_request_success("abort");
  }
};

OpenAiService::OpenAiService(OpenAiServiceOptions options)
    : options_(std::move(options)), created_(unix_seconds_now()) {
  TS_CHECK(!options_.served_model_names.empty()) << "a served model name";
  defaults_.served_model_names = options_.served_model_names;
}

OpenAiService::~OpenAiService() = default;

void OpenAiService::set_engine(LlmEngine* engine, std::unique_ptr<Tokenizer> tokenizer) {
  tokenizer_ = std::move(tokenizer);
  if (options_.use_generation_config) defaults_.generation = engine->generation_defaults();
  defaults_.max_model_len = engine->max_model_len();
  engine_.store(engine);
}

bool OpenAiService::ready(const std::shared_ptr<HttpResponder>& responder) const {
  if (engine_.load() != nullptr) return true;
  respond_error(responder, service_unavailable_error("the model is loading"),
                {{"Retry-After", "5"}});
  return false;
}

void OpenAiService::add_routes(HttpServer* server) {
  server->route("GET", "/health", [this](const HttpRequest&, std::shared_ptr<HttpResponder> r) {
    if (ready(r)) r->respond(200, "application/json", "{}");
  });
  server->route("GET", "/version", [](const HttpRequest&, std::shared_ptr<HttpResponder> r) {
    respond_json(r, version_json(kVersion));
  });
  server->route("GET", "/v1/models", [this](const HttpRequest&, std::shared_ptr<HttpResponder> r) {
    if (!ready(r)) return;
    std::vector<ModelCard> cards;
    for (const std::string& name : options_.served_model_names) {
      ModelCard card;
      card.id = name;
      card.root = options_.model_dir;
      card.max_model_len = defaults_.max_model_len;
      card.created = created_;
      cards.push_back(card);
    }
    respond_json(r, models_json(cards));
  });
  server->route("POST", "/v1/completions",
                [this](const HttpRequest& q, std::shared_ptr<HttpResponder> r) {
                  completions(q, std::move(r), false);
                });
  server->route("POST", "/v1/chat/completions",
                [this](const HttpRequest& q, std::shared_ptr<HttpResponder> r) {
                  completions(q, std::move(r), true);
                });
  server->route("POST", "/tokenize",
                [this](const HttpRequest& q, std::shared_ptr<HttpResponder> r) { tokenize(q, r); });
  server->route(
      "POST", "/detokenize",
      [this](const HttpRequest& q, std::shared_ptr<HttpResponder> r) { detokenize(q, r); });
  server->route("GET", "/metrics",
                [this](const HttpRequest&, std::shared_ptr<HttpResponder> r) { metrics_route(r); });
}

void OpenAiService::completions(const HttpRequest& request,
                                std::shared_ptr<HttpResponder> responder, bool chat) {
  if (!ready(responder)) return;
  LlmEngine* engine = engine_.load();
  auto job = std::make_shared<Job>();
  job->service = this;
  job->engine = engine;
  job->tokenizer = tokenizer_.get();
  job->responder = responder;
  job->chat = chat;
  const char* prompt_param = chat ? "messages" : "prompt";
  if (chat) {
    ApiResult<ChatRequest> parsed = parse_chat_request(request.body, defaults_);
    if (!parsed.is_ok()) return respond_error(responder, parsed.error());
    job->options = parsed.value().options;
    auto rendered =
        render_chat_prompt(options_.model_dir, *tokenizer_, parsed.value().messages_json);
    if (!rendered.is_ok()) {
      return respond_error(responder, api_error_from_status(rendered.status(), "messages"));
    }
    auto ids = tokenizer_->encode(rendered.value(), job->options.add_special_tokens);
    if (!ids.is_ok())
      return respond_error(responder, api_error_from_status(ids.status(), "messages"));
    job->prompts.push_back(std::move(ids).value());
    job->prompt_texts.push_back(rendered.value());
    job->meta.id = make_chat_completion_id();
  } else {
    ApiResult<CompletionRequest> parsed = parse_completion_request(request.body, defaults_);
    if (!parsed.is_ok()) return respond_error(responder, parsed.error());
    job->options = parsed.value().options;
    for (const PromptInput& p : parsed.value().prompts) {
      if (p.is_tokens) {
        job->prompts.push_back(p.token_ids);
        auto text = tokenizer_->decode(p.token_ids, false);
        job->prompt_texts.push_back(text.is_ok() ? text.value() : std::string());
        continue;
      }
      auto ids = tokenizer_->encode(p.text, job->options.add_special_tokens);
      if (!ids.is_ok()) {
        return respond_error(responder, api_error_from_status(ids.status(), "prompt"));
      }
      job->prompts.push_back(std::move(ids).value());
      job->prompt_texts.push_back(p.text);
    }
    job->meta.id = make_completion_id();
  }
  job->meta.created = unix_seconds_now();
  job->meta.model = job->options.model;
  job->n = job->options.params.n;

  // Bounded waiting: beyond the running sequences and --max-queue, ask the client to retry.
  const EngineLoad load = engine->load();
  if (active_.load() >= static_cast<int64_t>(options_.max_queue) + load.running) {
    return respond_error(responder, service_unavailable_error("the server's request queue is full"),
                         {{"Retry-After", "1"}});
  }

  std::vector<SamplingParams> params;
  for (const auto& p : job->prompts) {
    ApiResult<SamplingParams> sp = sampling_params_for_prompt(
        job->options, static_cast<int32_t>(p.size()), defaults_.max_model_len, prompt_param);
    if (!sp.is_ok()) return respond_error(responder, sp.error());
    params.push_back(sp.value());
  }
  const bool skip_special = job->options.skip_special_tokens;
  const Tokenizer* tok = tokenizer_.get();
  DecodeFn decode = [tok, skip_special](const std::vector<int32_t>& ids, size_t b, size_t e) {
    auto s = tok->decode(std::span<const int32_t>(ids.data() + b, e - b), skip_special);
    return s.is_ok() ? s.value() : std::string();
  };
  job->choices.resize(job->prompts.size() * static_cast<size_t>(job->n));
  for (size_t i = 0; i < job->choices.size(); ++i) {
    job->choices[i].detok = std::make_unique<StreamingDetokenizer>(
        decode, job->prompts[i / static_cast<size_t>(job->n)], job->options.stop);
  }
  job->cached_tokens.assign(job->prompts.size(), 0);

  std::weak_ptr<Job> weak = job;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    for (size_t p = 0; p < job->prompts.size(); ++p) {
      auto stream = engine->add_request(job->prompts[p], params[p], [weak] {
        if (auto j = weak.lock()) j->pump();
      });
      if (!stream.is_ok()) {
        for (const auto& s : job->streams) engine->abort(s->request_id());
        job->finished = true;
        return respond_error(responder, api_error_from_status(stream.status(), prompt_param));
      }
      job->streams.push_back(stream.value());
    }
    // Held here until it completes or is cancelled; the callbacks hold it weakly.
    {
      std::lock_guard<std::mutex> jobs_lock(jobs_mu_);
      jobs_.emplace(job.get(), job);
    }
    active_.fetch_add(1);
    int64_t prompt_tokens = 0;
    for (const auto& p : job->prompts) prompt_tokens += static_cast<int64_t>(p.size());
    metrics_.add_prompt_tokens(prompt_tokens);
    if (job->options.stream) responder->start_stream(200);
  }
  // Outside the job's lock: a client already gone calls this at once.
  responder->on_cancel([weak] {
    if (auto j = weak.lock()) j->cancel();
  });
}

void OpenAiService::forget(Job* job) {
  active_.fetch_sub(1);
  std::lock_guard<std::mutex> lock(jobs_mu_);
  jobs_.erase(job);
}

void OpenAiService::tokenize(const HttpRequest& request,
                             const std::shared_ptr<HttpResponder>& responder) {
  if (!ready(responder)) return;
  ApiResult<TokenizeRequest> parsed = parse_tokenize_request(request.body, defaults_);
  if (!parsed.is_ok()) return respond_error(responder, parsed.error());
  const TokenizeRequest& t = parsed.value();
  std::string text = t.text;
  if (t.is_chat) {
    auto rendered = render_chat_prompt(options_.model_dir, *tokenizer_, t.messages_json);
    if (!rendered.is_ok()) {
      return respond_error(responder, api_error_from_status(rendered.status(), "messages"));
    }
    text = rendered.value();
  }
  auto ids = tokenizer_->encode(text, t.add_special_tokens);
  if (!ids.is_ok()) return respond_error(responder, api_error_from_status(ids.status(), "prompt"));
  std::vector<std::string> strs;
  if (t.return_token_strs) {
    for (int32_t id : ids.value()) {
      auto s = tokenizer_->decode(std::span<const int32_t>(&id, 1), false);
      strs.push_back(s.is_ok() ? s.value() : std::string());
    }
  }
  respond_json(responder, tokenize_response_json(ids.value(), defaults_.max_model_len,
                                                 t.return_token_strs ? &strs : nullptr));
}

void OpenAiService::detokenize(const HttpRequest& request,
                               const std::shared_ptr<HttpResponder>& responder) {
  if (!ready(responder)) return;
  ApiResult<DetokenizeRequest> parsed = parse_detokenize_request(request.body, defaults_);
  if (!parsed.is_ok()) return respond_error(responder, parsed.error());
  for (int32_t id : parsed.value().tokens) {
    if (id >= tokenizer_->vocab_size()) {
      return respond_error(responder, bad_request_error("token id " + std::to_string(id) +
                                                            " is outside the vocabulary",
                                                        "tokens"));
    }
  }
  auto text = tokenizer_->decode(parsed.value().tokens, false);
  if (!text.is_ok()) {
    return respond_error(responder, api_error_from_status(text.status(), "tokens"));
  }
  respond_json(responder, detokenize_response_json(text.value()));
}

void OpenAiService::metrics_route(const std::shared_ptr<HttpResponder>& responder) {
  LlmEngine* engine = engine_.load();
  if (engine != nullptr) {
    const EngineLoad l = engine->load();
    EngineMetricsSnapshot s;
    s.num_requests_running = l.running;
    s.num_requests_waiting = l.waiting + l.swapped;
    s.kv_cache_usage = l.kv_blocks > 0 ? static_cast<double>(l.kv_blocks_used) / l.kv_blocks : 0.0;
    s.num_preemptions_total = l.preemptions;
    s.prefix_cache_queries_total = l.prefix_query_tokens;
    s.prefix_cache_hits_total = l.prefix_hit_tokens;
    s.kv_blocks_used = {l.kv_blocks_used, l.host_blocks_used, l.disk_blocks_used};
    s.kv_blocks_capacity = {l.kv_blocks, l.host_blocks, l.disk_blocks};
    s.tier_bytes_total = {l.bytes_host_to_device, l.bytes_device_to_host, l.bytes_disk_to_host,
                          l.bytes_host_to_disk, l.bytes_disk_to_device};
    s.weight_stream_stall_seconds_total = l.weight_stall_seconds;
    metrics_.record_engine(s);
  }
  responder->respond(200, "text/plain; version=0.0.4; charset=utf-8",
                     metrics_.render(options_.served_model_names.front()));
}

}  // namespace tierserve

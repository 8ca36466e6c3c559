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
    int64_t text_offset = 0;  // completions' logprobs: code points before the next token
    std::string finish_reason;
    StopReason stop_reason;
    Clock::time_point last_token;  // for inter-token latency
    bool role_sent = false;        // chat streams: the role chunk went out
    bool echo_sent = false;        // completion streams with echo: the prompt went out
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
  std::vector<int32_t> cached_tokens;     // per prompt
  std::vector<uint8_t> first_token_seen;  // per prompt: time to first token recorded
  int64_t reserved = 0;                   // queue slots held (OpenAiService::queued_)
  Clock::time_point arrival = Clock::now();
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

  // The text of one token, as logprobs show it.
  std::string piece(int32_t token) const {
    auto s = tokenizer->decode(std::span<const int32_t>(&token, 1), false);
    return s.is_ok() ? s.value() : std::string();
  }

  void handle(size_t p, const RequestOutput& out) {
    Metrics& m = service->metrics_;
    if (out.queue_seconds >= 0) m.observe_request_queue_time(out.queue_seconds);
    Choice& c = choices[p * static_cast<size_t>(n) + static_cast<size_t>(out.index)];
    if (c.done) return;  // stopped by a stop string; the engine's rest is dropped
    std::string delta;
    std::vector<int32_t> new_ids;
    std::vector<TokenLogprob> new_logprobs;
    const Clock::time_point now = Clock::now();
    const int64_t offset_before = c.text_offset;
    for (size_t i = 0; i < out.token_ids.size() && !c.done; ++i) {
      const int32_t t = out.token_ids[i];
      if (!first_token_seen[p]) {
        m.observe_time_to_first_token(seconds_between(arrival, now));
        first_token_seen[p] = 1;
      }
      if (!c.token_ids.empty()) m.observe_inter_token_latency(seconds_between(c.last_token, now));
      c.last_token = now;
      ++completion_tokens;
      c.token_ids.push_back(t);
      new_ids.push_back(t);
      if (options.logprobs && i < out.logprobs.size()) {
        TokenLogprob lp{piece(t), out.logprobs[i], {}};
        if (i < out.top_logprobs.size()) {
          for (const TopLogprob& alt : out.top_logprobs[i]) {
            lp.top.emplace_back(piece(alt.token), alt.logprob);
          }
        }
        c.text_offset += code_points(lp.token);
        new_logprobs.push_back(std::move(lp));
      }
      // The engine's last token of a "stop" finish is the stop token (EOS or stop_token_ids):
      // as vLLM, its text is left out unless include_stop_str_in_output.
      const bool stop_token =
          out.finished && out.finish_reason == "stop" && i + 1 == out.token_ids.size();
      if (stop_token) {
        const auto& ids = options.params.stop_token_ids;
        if (std::find(ids.begin(), ids.end(), t) != ids.end()) c.stop_reason.token_id = t;
        if (options.include_stop_str_in_output) delta += c.detok->add(t);
      } else {
        delta += c.detok->add(t);
      }
      if (c.detok->stopped()) {
        c.done = true;
        c.finish_reason = "stop";
        c.stop_reason = StopReason{c.detok->matched_stop(), std::nullopt};
        // With one output, nothing else needs the request: stop generating at once.
        if (n == 1) engine->abort(streams[p]->request_id());
      }
    }
    m.add_generation_tokens(static_cast<int64_t>(new_ids.size()));  // one update, one lock
    if (out.finished && !c.done) {
      delta += c.detok->finish();
      c.done = true;
      c.finish_reason = out.finish_reason;
      if (out.finish_reason == "error" && !error) {
        error = api_error_from_status(out.error);
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
    const std::vector<int32_t>* prompt_ids = options.return_token_ids ? &prompts[p] : nullptr;
    if (chat && !c.role_sent && (!new_ids.empty() || c.done)) {
      send_framed(responder, chat_role_chunk(meta, index, prompt_ids));
      c.role_sent = true;
    }
    if (options.echo && !chat && !c.echo_sent) {
      delta = prompt_texts[p] + delta;  // vLLM streams the echoed prompt with the first text
      c.echo_sent = true;
    }
    if (delta.empty() && !c.done && new_ids.empty()) return;
    StreamDelta d;
    d.index = index;
    d.text = std::move(delta);
    d.token_ids = std::move(new_ids);
    if (options.logprobs) d.logprobs = std::move(new_logprobs);
    d.text_offset = offset_before;
    if (c.done) {
      d.finish_reason = c.finish_reason;
      d.stop_reason = c.stop_reason;
    }
    // Completions: the prompt's ids go with the choice's first chunk.
    const bool first_chunk = c.token_ids.size() == d.token_ids.size();
    send_framed(responder, chat ? chat_delta_chunk(meta, d, options.return_token_ids)
                                : completion_delta_chunk(meta, d, options.return_token_ids,
                                                         first_chunk ? prompt_ids : nullptr));
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
        const size_t p = i / static_cast<size_t>(n);
        ChoiceOutput o;
        o.index = static_cast<int32_t>(i);
        const bool echo = options.echo && !chat;
        o.text = echo ? prompt_texts[p] + c.text : c.text;
        o.text_offset = echo ? code_points(prompt_texts[p]) : 0;
        o.finish_reason = c.finish_reason;
        o.stop_reason = c.stop_reason;
        o.token_ids = c.token_ids;
        o.prompt_token_ids = prompts[p];
        if (options.logprobs) o.logprobs = c.logprobs;
        outs.push_back(std::move(o));
      }
      respond_json(responder,
                   chat ? chat_completion_response_json(
                              meta, outs, u, options.return_token_ids ? &prompts[0] : nullptr)
                        : completion_response_json(meta, outs, u, options.return_token_ids));
    }
    // One count per engine request (prompt), as vLLM counts requests, with its first output's
    // reason.
    for (size_t p = 0; p < prompts.size(); ++p) {
      m.inc_request_success(error ? "error" : choices[p * static_cast<size_t>(n)].finish_reason);
    }
  }

  // A server thread: the client went away.
  void cancel() {
    const std::shared_ptr<Job> self = shared_from_this();  // outlives the unlock below
    std::lock_guard<std::mutex> lock(mu);
    if (finished) return;
    finished = true;
    service->forget(this);
    for (const auto& s : streams) {
      engine->abort(s->request_id());
      service->metrics_.inc_request_success("abort");
    }
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
    const ChatRequest& chat_request = parsed.value();
    job->options = chat_request.options;
    auto rendered = render_chat_prompt(options_.model_dir, *tokenizer_, chat_request.messages_json,
                                       chat_request.template_options);
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
        decode, job->prompts[i / static_cast<size_t>(job->n)], job->options.stop,
        job->options.include_stop_str_in_output);
  }
  job->cached_tokens.assign(job->prompts.size(), 0);
  job->first_token_seen.assign(job->prompts.size(), 0);

  // Bounded waiting: at most --max-num-seqs engine requests run and --max-queue more wait; beyond
  // that the client is asked to retry. The slots are reserved atomically, released by forget().
  const int64_t wanted = static_cast<int64_t>(job->prompts.size());
  if (queued_.fetch_add(wanted) + wanted > options_.max_running + options_.max_queue) {
    queued_.fetch_sub(wanted);
    return respond_error(responder, service_unavailable_error("the server's request queue is full"),
                         {{"Retry-After", "1"}});
  }
  job->reserved = wanted;

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
        queued_.fetch_sub(job->reserved);
        return respond_error(responder, api_error_from_status(stream.status(), prompt_param));
      }
      job->streams.push_back(stream.value());
    }
    // Held here until it completes or is cancelled; the callbacks hold it weakly.
    {
      std::lock_guard<std::mutex> jobs_lock(jobs_mu_);
      jobs_.emplace(job.get(), job);
    }
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
  queued_.fetch_sub(job->reserved);
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
    auto rendered =
        render_chat_prompt(options_.model_dir, *tokenizer_, t.messages_json, t.template_options);
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

#include "bench/bench_command.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/http_stream.h"
#include "bench/load_generator.h"
#include "bench/plot.h"
#include "bench/report.h"
#include "bench/stream_recorder.h"

namespace tierserve::bench {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// The body of one streamed request.
std::string request_body(const BenchServeOptions& o, bool chat, const BenchPrompt& p) {
  Json j;
  j["model"] = o.model;
  if (chat) {
    j["messages"] =
        p.messages.is_null() ? Json::array({{{"role", "user"}, {"content", p.text}}}) : p.messages;
  } else {
    j["prompt"] = p.text;
  }
  j["max_tokens"] = p.output_tokens;
  j["temperature"] = o.temperature;
  j["stream"] = true;
  j["stream_options"] = {{"include_usage", true}};
  if (o.ignore_eos) j["ignore_eos"] = true;
  return j.dump();
}

// The server's first model, from GET /v1/models.
Result<std::string> first_model(StreamingConnection& c, const BenchServeOptions& o,
                                std::chrono::milliseconds timeout) {
  std::string body;
  PostOutcome out = c.get("/v1/models", o.api_key, timeout,
                          [&body](std::string_view b, double) { body.append(b); });
  if (!out.error_class.empty()) {
    return io_error("GET " + o.base_url +
                    "/v1/models (to find the model; or pass --model): " + out.error);
  }
  const Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
    return io_error("GET " + o.base_url + "/v1/models returned no model; pass --model");
  }
  return j["data"][0]["id"].get<std::string>();
}

RequestRecord send_one(const BenchServeOptions& o, bool chat, std::chrono::milliseconds timeout,
                       const BenchPrompt& p, StreamingConnection& c) {
  StreamRecorder rec;
  PostOutcome out = c.post(o.endpoint, request_body(o, chat, p), o.api_key, timeout,
                           [&rec](std::string_view bytes, double t) { rec.feed(bytes, t); });
  RequestRecord r;
  if (!out.error_class.empty()) {
    r.error_class = out.error_class;
    r.error = out.error;
    r.latency_s = out.end_s;
    r.prompt_tokens = p.input_tokens;
    return r;
  }
  rec.finish(out.end_s, p.input_tokens, &r);
  return r;
}

Status run(BenchServeOptions& o) {
  if (o.endpoint != "/v1/completions" && o.endpoint != "/v1/chat/completions") {
    return invalid_argument("--endpoint must be /v1/completions or /v1/chat/completions, got " +
                            o.endpoint);
  }
  const bool chat = o.endpoint == "/v1/chat/completions";
  TS_ASSIGN_OR_RETURN(BaseUrl url, parse_base_url(o.base_url));
  TS_ASSIGN_OR_RETURN(const double timeout_s, parse_seconds(o.timeout, "--timeout"));
  if (timeout_s <= 0) return invalid_argument("--timeout must be > 0");
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3));
  LoadOptions load;
  load.max_concurrency = o.max_concurrency;
  if (o.max_concurrency < 0) return invalid_argument("--max-concurrency must be >= 1");
  if (o.request_rate == "inf") {
    load.request_rate = std::numeric_limits<double>::infinity();
  } else {
    char* end = nullptr;
    load.request_rate = std::strtod(o.request_rate.c_str(), &end);
    if (end == o.request_rate.c_str() || *end != '\0' || !(load.request_rate > 0)) {
      return invalid_argument("--request-rate must be a number > 0 or inf, got '" + o.request_rate +
                              "'");
    }
  }
  if (!o.duration.empty()) {
    TS_ASSIGN_OR_RETURN(load.duration_s, parse_seconds(o.duration, "--duration"));
    if (load.duration_s <= 0) return invalid_argument("--duration must be > 0");
    if (o.max_concurrency == 0 && !std::isfinite(load.request_rate)) {
      return invalid_argument(
          "--duration needs --max-concurrency or a finite --request-rate (else it would send "
          "requests as fast as it can for the whole run)");
    }
  }
  if (!o.ramp_up.empty()) {
    TS_ASSIGN_OR_RETURN(load.ramp_up_s, parse_seconds(o.ramp_up, "--ramp-up"));
  }
  TS_ASSIGN_OR_RETURN(load.sample_interval_s,
                      parse_seconds(o.sample_interval, "--sample-interval"));
  load.num_prompts = o.dataset.num_prompts;
  load.seed = o.dataset.seed;
  for (double p : o.metric_percentiles) {
    if (!(p >= 0 && p <= 100)) return invalid_argument("--metric-percentiles must be in [0, 100]");
  }
  for (int32_t c : o.concurrency_sweep) {
    if (c < 1) return invalid_argument("--concurrency-sweep levels must be >= 1");
  }

  // The tokenizer: --tokenizer, else --model when it names a directory.
  std::unique_ptr<Tokenizer> tokenizer;
  std::string tokenizer_dir = o.tokenizer;
  if (tokenizer_dir.empty() && !o.model.empty() && fs::is_directory(o.model)) {
    tokenizer_dir = o.model;
  }
  if (!tokenizer_dir.empty()) {
    auto t = Tokenizer::load(tokenizer_dir);
    if (!t.is_ok()) return t.status().with_context("--tokenizer");
    tokenizer = std::move(t.value());
  }
  o.dataset.tokenizer = tokenizer.get();
  TS_ASSIGN_OR_RETURN(std::vector<BenchPrompt> prompts, make_dataset(o.dataset));

  // The server: its model, and one request that must succeed before the load starts.
  StreamingConnection probe(url);
  if (o.model.empty() || fs::is_directory(o.model)) {
    TS_ASSIGN_OR_RETURN(o.model, first_model(probe, o, timeout));
  }
  std::fprintf(stderr, "bench: %s%s, model %s, %zu prompts (%s); a first request...\n",
               o.base_url.c_str(), o.endpoint.c_str(), o.model.c_str(), prompts.size(),
               o.dataset.name.c_str());
  {
    RequestRecord first = send_one(o, chat, timeout, prompts[0], probe);
    if (!first.success) {
      return io_error("the first request failed (" + first.error_class + "): " + first.error);
    }
  }

  const bool tty = isatty(STDERR_FILENO) != 0;
  std::vector<int32_t> levels = o.concurrency_sweep;
  if (levels.empty()) levels.push_back(o.max_concurrency);
  std::vector<std::pair<int32_t, ServeSummary>> rows;
  Json runs = Json::array();
  for (int32_t level : levels) {
    load.max_concurrency = level;
    RunDescription d;
    d.base_url = o.base_url;
    d.endpoint = o.endpoint;
    d.model = o.model;
    d.dataset = o.dataset.name;
    d.max_concurrency = level;
    d.request_rate = load.request_rate;
    d.duration_s = load.duration_s;
    d.ramp_up_s = load.ramp_up_s;
    d.num_prompts = o.dataset.num_prompts;
    double last_line = 0;
    auto progress = [&](const LoadSample& s, bool final) {
      if (o.disable_tqdm) return;
      if (tty) {
        std::fprintf(stderr, "\r%s%s", progress_line(s).c_str(), final ? "\n" : "");
      } else if (final || s.t_s - last_line >= std::max(load.sample_interval_s, 1.0)) {
        std::fprintf(stderr, "%s\n", progress_line(s).c_str());
        last_line = s.t_s;
      }
    };
    LoadResult result = run_load(
        prompts, load, [&url] { return std::make_unique<StreamingConnection>(url); },
        [&](const BenchPrompt& p, StreamingConnection& c) {
          return send_one(o, chat, timeout, p, c);
        },
        progress);
    ServeSummary s = summarize(result.records, result.duration_s, o.metric_percentiles);
    std::printf("%s", format_result_table(d, s, o.metric_percentiles).c_str());
    std::fflush(stdout);
    runs.push_back(result_json(d, s, result, o.metric_percentiles));
    if (!o.plot_dir.empty()) {
      fs::path dir = o.plot_dir;
      if (levels.size() > 1) dir /= "concurrency_" + std::to_string(level);
      TS_RETURN_IF_ERROR(write_serve_plots(dir, s, result));
    }
    rows.emplace_back(level, std::move(s));
  }
  if (levels.size() > 1) std::printf("\n%s", format_sweep_table(rows).c_str());
  if (!o.result_json.empty()) {
    TS_RETURN_IF_ERROR(
        write_result_json(o.result_json, runs.size() == 1 ? runs[0] : Json{{"runs", runs}}));
  }
  return Status::ok();
}

}  // namespace

Result<double> parse_seconds(const std::string& text, const std::string& flag) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const std::string unit(end == nullptr ? "" : end);
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  if (unit == "ms") scale = 1e-3;
  if (unit == "m") scale = 60;
  if (unit == "h") scale = 3600;
  if (end == text.c_str() || scale == 0 || !std::isfinite(v) || v < 0) {
    return invalid_argument(flag + " must be a duration such as 300s, 5m or 250ms, got '" + text +
                            "'");
  }
  return v * scale;
}

CLI::App* add_bench_command(CLI::App& app, BenchOptions& options, BenchCommands* commands) {
  CLI::App* bench =
      app.add_subcommand("bench", "Benchmarks: serving load tests, offline decode, offload tuning");
  bench->require_subcommand(1);
  BenchServeOptions& o = options.serve;
  CLI::App* cmd = bench->add_subcommand(
      "serve",
      "Load-test an OpenAI-compatible server (tierserve or another) and report TTFT, "
      "TPOT, ITL, latency and throughput");
  cmd->add_option("--base-url", o.base_url, "Server address")->capture_default_str();
  cmd->add_option("--endpoint", o.endpoint, "/v1/completions or /v1/chat/completions")
      ->capture_default_str();
  cmd->add_option("--model", o.model, "Model name (default: the server's first model)");
  cmd->add_option("--api-key", o.api_key, "Bearer token (default: $OPENAI_API_KEY)");
  cmd->add_option("--tokenizer", o.tokenizer,
                  "Model directory whose tokenizer makes random prompts of exact lengths "
                  "(default: --model, when it is a directory)");
  cmd->add_option("--dataset-name", o.dataset.name, "random or jsonl")->capture_default_str();
  cmd->add_option("--dataset-path", o.dataset.path,
                  "jsonl: one JSON object per line with prompt, messages, question (OpenQA) "
                  "or instruction (LongAlpaca); optional max_tokens");
  cmd->add_option("--num-prompts", o.dataset.num_prompts, "Requests to send (without --duration)")
      ->capture_default_str();
  cmd->add_option("--random-input-len", o.dataset.random_input_len)->capture_default_str();
  cmd->add_option("--random-output-len", o.dataset.random_output_len)->capture_default_str();
  cmd->add_option("--random-range-ratio", o.dataset.random_range_ratio,
                  "Lengths uniform in [len * (1 - r), len * (1 + r)]")
      ->capture_default_str();
  cmd->add_option("--shared-prefix-len", o.dataset.shared_prefix_len,
                  "Random prompts share a prefix of this many tokens (exercises prefix caching)")
      ->capture_default_str();
  cmd->add_option("--jsonl-output-len", o.dataset.jsonl_output_len,
                  "max_tokens of jsonl prompts without their own")
      ->capture_default_str();
  cmd->add_option("--seed", o.dataset.seed)->capture_default_str();
  cmd->add_option("--max-concurrency", o.max_concurrency,
                  "At most this many requests in flight (a closed loop); default: no limit");
  cmd->add_option("--request-rate", o.request_rate,
                  "Requests per second, Poisson arrivals; inf sends all at once")
      ->capture_default_str();
  cmd->add_option("--duration", o.duration, "Run for this long (300s, 5m), cycling the prompts");
  cmd->add_option("--ramp-up", o.ramp_up,
                  "Grow concurrency (and rate) linearly to the full value over this time");
  cmd->add_option("--sample-interval", o.sample_interval, "Sample throughput this often")
      ->capture_default_str();
  cmd->add_option("--timeout", o.timeout, "Per connect, read and write")->capture_default_str();
  cmd->add_option("--concurrency-sweep", o.concurrency_sweep,
                  "Run at each of these --max-concurrency levels (1,10,50,100) and tabulate")
      ->delimiter(',');
  cmd->add_option("--metric-percentiles", o.metric_percentiles, "Percentiles to report")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o.ignore_eos, "Ask the server to ignore EOS (vLLM's extension)");
  cmd->add_option("--temperature", o.temperature)->capture_default_str();
  cmd->add_option("--result-json", o.result_json,
                  "Write the summary (vLLM's keys) and every request's timings here");
  cmd->add_option("--plot", o.plot_dir, "Write PNG charts here (needs gnuplot)");
  cmd->add_flag("--disable-tqdm", o.disable_tqdm, "No live progress line");
  commands->serve = cmd;
  commands->decode = add_bench_decode_command(bench, options.decode);
  commands->offload = add_bench_offload_command(bench, options.offload);
  return bench;
}

int run_bench_serve(BenchServeOptions& options, const char* env_api_key) {
  if (options.api_key.empty() && env_api_key != nullptr) options.api_key = env_api_key;
  return exit_status(run(options));
}

}  // namespace tierserve::bench

#include "server/serve_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "common/logging.h"
#include "engine/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/engine_flags.h"
#include "server/load_progress.h"
#include "server/openai_service.h"

namespace tierserve {

namespace {

// vLLM's --dtype names. The weights are used in the checkpoint's own dtype, so a name is accepted
// when it names that dtype (or is auto); converting is not supported.
Status check_dtype(const std::string& dtype, const std::string& model_dir) {
  static const std::map<std::string, DType> kNames = {{"half", DType::kF16},
                                                      {"float16", DType::kF16},
                                                      {"bfloat16", DType::kBF16},
                                                      {"float", DType::kF32},
                                                      {"float32", DType::kF32}};
  if (dtype == "auto") return Status::ok();
  auto it = kNames.find(dtype);
  if (it == kNames.end()) {
    return invalid_argument(
        "--dtype must be auto, half, float16, bfloat16, float or float32, got '" + dtype + "'");
  }
  auto config = load_model_config(model_dir);
  if (!config.is_ok()) return Status::ok();  // reported with context when the engine loads
  if (config.value().dtype == it->second) return Status::ok();
  return unimplemented("--dtype " + dtype + ": the checkpoint is " +
                       std::string(dtype_name(config.value().dtype)) +
                       " and converting weights is not supported; use --dtype auto");
}

}  // namespace

Status ServeCommandOptions::validate() const {
  if (model_dir.empty())
    return invalid_argument("a model directory is required (MODEL_DIR or --model)");
  if (load_format != "auto" && load_format != "dummy") {
    return invalid_argument("--load-format must be auto or dummy, got '" + load_format + "'");
  }
  if (generation_config != "auto" && generation_config != "vllm") {
    return invalid_argument("--generation-config must be auto or vllm, got '" + generation_config +
                            "'");
  }
  if (seed && *seed < 0) {
    return invalid_argument("--seed must be a non-negative integer, got " + std::to_string(*seed));
  }
  if (max_queue < 0) {
    return invalid_argument("--max-queue must be >= 0, got " + std::to_string(max_queue));
  }
  if (!(shutdown_timeout >= 0 && shutdown_timeout < 86400)) {
    return invalid_argument("--shutdown-timeout must be in [0, 86400) seconds");
  }
  for (const std::string& name : served_model_names) {
    if (name.empty()) return invalid_argument("--served-model-name must not be empty");
  }
  TS_RETURN_IF_ERROR(http.validate());
  return engine.validate();
}

CLI::App* add_serve_command(CLI::App& app, ServeCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("model_dir", o.model_dir, "Hugging Face model directory");
  cmd->add_option("--model", o.model_flag, "The model directory (instead of MODEL_DIR)");
  cmd->add_option("--host", o.http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o.http.port, "Port to listen on (0: any free port)")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o.served_model_names,
                  "Model names the API accepts (default: the directory's name)");
  cmd->add_option("--api-key", o.http.api_key,
                  "Require this bearer key on /v1/* (also TIERSERVE_API_KEY)");
  cmd->add_option("--dtype", o.dtype, "auto (the checkpoint's dtype)")->capture_default_str();
  cmd->add_option("--load-format", o.load_format, "auto (safetensors) or dummy (random weights)")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of unseeded requests' generators, and dummy weights");
  cmd->add_option("--generation-config", o.generation_config,
                  "auto: defaults from generation_config.json; vllm: OpenAI's defaults only")
      ->capture_default_str();
  cmd->add_option("--max-queue", o.max_queue,
                  "Requests that may wait beyond the --max-num-seqs running ones (503 with "
                  "Retry-After beyond)")
      ->capture_default_str();
  cmd->add_option("--shutdown-timeout", o.shutdown_timeout,
                  "Seconds running requests get to finish after SIGINT/SIGTERM")
      ->capture_default_str();
  add_engine_flags(cmd, o.engine);
  return cmd;
}

int run_serve_command(ServeCommandOptions& o, const char* env_api_key) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 1;
  };
  if (o.model_dir.empty()) o.model_dir = o.model_flag;
  if (o.http.api_key.empty() && env_api_key != nullptr) o.http.api_key = env_api_key;
  if (o.served_model_names.empty() && !o.model_dir.empty()) {
    o.served_model_names.push_back(
        std::filesystem::path(o.model_dir).lexically_normal().filename().string());
    if (o.served_model_names.back().empty()) o.served_model_names.back() = o.model_dir;
  }
  if (o.load_format == "dummy") o.engine.load_format = LoadFormat::kDummy;
  if (o.seed) o.engine.seed = static_cast<uint64_t>(*o.seed);
  o.http.stop_signals = {SIGINT, SIGTERM};
  if (Status s = o.validate(); !s.is_ok()) return fail(s);
  if (Status s = check_dtype(o.dtype, o.model_dir); !s.is_ok()) return fail(s);

  // Listening first, so that /health answers 503 while the model loads.
  auto server = HttpServer::create(o.http);
  if (!server.is_ok()) return fail(server.status());
  OpenAiServiceOptions so;
  so.model_dir = o.model_dir;
  so.served_model_names = o.served_model_names;
  so.max_queue = o.max_queue;
  so.max_running = o.engine.max_num_seqs;
  so.use_generation_config = o.generation_config == "auto";
  OpenAiService service(so);
  service.add_routes(server.value().get());
  server.value()->start();

  // Signals are watched from here on. One that arrives while the model loads ends the process at
  // once (loading cannot be interrupted, and no request has been accepted): disk-tier files that
  // a killed load leaves are removed by the next start (offload/disk_store.h). After loading,
  // the signal starts the graceful shutdown below.
  std::atomic<bool> loaded{false};
  std::atomic<int> signal_number{0};
  std::thread watcher([&] {
    const int s = server.value()->wait_for_signal();
    if (s != 0 && !loaded.load()) {
      std::fprintf(stderr, "signal %d while loading: exiting\n", s);
      std::fflush(stderr);
      std::_Exit(0);
    }
    signal_number = s;
  });
  // Every return below joins the watcher: server->stop() wakes it with 0.
  auto finish = [&](int rc) {
    loaded = true;  // failing, not loading: a signal now changes nothing
    server.value()->stop(std::chrono::milliseconds(0));
    watcher.join();
    return rc;
  };

  auto tokenizer = Tokenizer::load(o.model_dir);
  if (!tokenizer.is_ok()) {
    return finish(fail(tokenizer.status().with_context("serve needs the model's tokenizer")));
  }
  // A progress bar on a terminal, plain lines in a log; then the engine's memory report.
  o.engine.tokenizer_vocab_size = tokenizer.value()->vocab_size();
  LoadProgressPrinter progress(stderr, isatty(STDERR_FILENO) != 0);
  o.engine.on_load_progress = [&progress](const LoadProgress& p) { progress.update(p); };
  auto engine = LlmEngine::create(o.model_dir, o.engine);
  o.engine.on_load_progress = nullptr;
  if (!engine.is_ok()) return finish(fail(engine.status()));
  loaded = true;
  engine.value()->start();
  service.set_engine(engine.value().get(), std::move(tokenizer).value());
  std::fprintf(stderr, "listening on http://%s:%u (model %s)\n", o.http.host.c_str(),
               static_cast<unsigned>(server.value()->port()), o.served_model_names.front().c_str());
  std::fflush(stderr);

  watcher.join();  // until a signal arrives
  if (signal_number != 0) {
    std::fprintf(stderr, "signal %d: stopping; %lld request(s) in flight get %.0f s to finish\n",
                 signal_number.load(), static_cast<long long>(server.value()->requests_in_flight()),
                 o.shutdown_timeout);
  }
  server.value()->stop(std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout * 1000)));
  engine.value()->stop();
  return 0;
}

}  // namespace tierserve

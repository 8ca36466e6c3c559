// `tierserve serve MODEL_DIR`: the OpenAI-compatible HTTP server (vLLM's flag names), over one
// LlmEngine running its step loop on its own thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/llm_engine.h"
#include "server/http_server.h"

namespace tierserve {

struct ServeCommandOptions {
  std::string model_dir;                        // positional, or --model
  std::string model_flag;                       // --model
  HttpServerOptions http;                       // --host, --port, --api-key
  std::vector<std::string> served_model_names;  // default: the model directory's name
  EngineOptions engine;                         // the engine flags (server/engine_flags.h)
  std::string load_format = "auto";             // auto or dummy
  std::string dtype = "auto";                   // only the checkpoint's own dtype is supported
  std::string generation_config = "auto";       // auto: generation_config.json; vllm: ignore it
  std::optional<int64_t> seed;                  // --seed
  int32_t max_queue = 1024;                     // --max-queue: waiting requests at most
  double shutdown_timeout = 30;                 // --shutdown-timeout, seconds
  Status validate() const;
};

// Registers the subcommand on `app`.
CLI::App* add_serve_command(CLI::App& app, ServeCommandOptions& options);

// Runs the server until SIGINT or SIGTERM; 0 after a clean shutdown, 1 with a one-line error.
// `env_api_key` is TIERSERVE_API_KEY (read in main), used when --api-key is absent.
int run_serve_command(ServeCommandOptions& options, const char* env_api_key);

}  // namespace tierserve

// The `tierserve` command line. Environment variables are read here and nowhere else.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>

#include "CLI/CLI.hpp"
#include "bench/bench_command.h"
#include "common/version.h"
#include "server/generate_command.h"
#include "server/serve_command.h"
#include "server/tokenize_command.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tierserve: an LLM inference engine whose weights and KV cache spill from device "
      "memory to host memory and NVMe"};
  app.set_version_flag("--version", std::string("tierserve ") + tierserve::kVersion);
  app.require_subcommand(1);
  tierserve::GenerateCommandOptions generate;
  CLI::App* generate_cmd = tierserve::add_generate_command(app, generate);
  tierserve::TokenizeCommandOptions tokenize;
  CLI::App* tokenize_cmd = tierserve::add_tokenize_command(app, tokenize);
  tierserve::ServeCommandOptions serve;
  CLI::App* serve_cmd = tierserve::add_serve_command(app, serve);
  tierserve::bench::BenchOptions bench;
  tierserve::bench::BenchCommands bench_cmds;
  tierserve::bench::add_bench_command(app, bench, &bench_cmds);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "error: %s (see tierserve --help)\n", e.what());
    return 2;
  }
  // The last line of defence: no exception escapes as a crash (std::bad_alloc from a hostile
  // input, for example); everything expected is a Status already.
  try {
    if (generate_cmd->parsed()) return tierserve::run_generate_command(generate);
    if (tokenize_cmd->parsed()) return tierserve::run_tokenize_command(tokenize);
    if (serve_cmd->parsed()) {
      return tierserve::run_serve_command(serve, std::getenv("TIERSERVE_API_KEY"));
    }
    if (bench_cmds.serve->parsed()) {
      return tierserve::bench::run_bench_serve(bench.serve, std::getenv("OPENAI_API_KEY"));
    }
    if (bench_cmds.decode->parsed()) return tierserve::bench::run_bench_decode(bench.decode);
    if (bench_cmds.offload->parsed()) return tierserve::bench::run_bench_offload(bench.offload);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}

// The `tierserve` command line. Environment variables are read here and nowhere else.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "common/version.h"
#include "server/generate_command.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tierserve: an LLM inference engine whose weights and KV cache spill from device "
      "memory to host memory and NVMe"};
  app.set_version_flag("--version", std::string("tierserve ") + tierserve::kVersion);
  app.require_subcommand(1);
  tierserve::GenerateCommandOptions generate;
  CLI::App* generate_cmd = tierserve::add_generate_command(app, generate);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "error: %s (see tierserve --help)\n", e.what());
    return 2;
  }
  if (generate_cmd->parsed()) return tierserve::run_generate_command(generate);
  return 1;
}

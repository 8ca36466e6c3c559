#include "bench/plot.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

extern char** environ;

namespace tierserve::bench {

namespace fs = std::filesystem;

Status run_gnuplot(const fs::path& script) {
  const std::string dir = script.parent_path().string();
  const std::string name = script.filename().string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, dir.c_str());
  std::vector<char*> argv = {const_cast<char*>("gnuplot"), const_cast<char*>(name.c_str()),
                             nullptr};
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return not_found("--plot needs gnuplot (Debian package gnuplot-nox): " +
                     std::string(std::strerror(rc)));
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return internal_error("gnuplot " + script.string() + " failed (status " +
                          std::to_string(status) + ")");
  }
  return Status::ok();
}

Status write_serve_plots(const fs::path& dir, const ServeSummary& s, const LoadResult& load) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("--plot " + dir.string() + ": " + ec.message());
  const std::vector<double> pcts = {50, 75, 90, 95, 99};
  {
    std::ofstream d(dir / "latency_percentiles.dat");
    d << "# percentile ttft_ms tpot_ms itl_ms e2el_ms\n";
    auto at = [](const Distribution& x, double p) {
      auto it = x.percentiles.find(p);
      return it == x.percentiles.end() ? 0.0 : it->second;
    };
    for (double p : pcts) {
      d << p << ' ' << at(s.ttft_ms, p) << ' ' << at(s.tpot_ms, p) << ' ' << at(s.itl_ms, p) << ' '
        << at(s.e2el_ms, p) << '\n';
    }
  }
  std::ofstream gp(dir / "plots.gp");
  gp << "set terminal pngcairo size 900,540\n"
        "set grid\n"
        "set key outside right\n"
        "set output 'latency_percentiles.png'\n"
        "set title 'Latency percentiles'\n"
        "set xlabel 'percentile'\n"
        "set ylabel 'ms'\n"
        "set logscale y\n"
        "plot 'latency_percentiles.dat' using 1:2 with linespoints title 'TTFT', \\\n"
        "     '' using 1:3 with linespoints title 'TPOT', \\\n"
        "     '' using 1:4 with linespoints title 'ITL', \\\n"
        "     '' using 1:5 with linespoints title 'E2EL'\n"
        "unset logscale y\n";
  if (!load.samples.empty()) {
    std::ofstream d(dir / "throughput_over_time.dat");
    d << "# t_s output_tok_per_s in_flight completed\n";
    for (const LoadSample& x : load.samples) {
      d << x.t_s << ' ' << x.output_throughput << ' ' << x.in_flight << ' ' << x.completed << '\n';
    }
    int32_t most = 1;
    for (const LoadSample& x : load.samples) most = std::max(most, x.in_flight);
    gp << "set y2range [0:" << (most * 5 + 3) / 4 << "]\n";
    gp << "set output 'throughput_over_time.png'\n"
          "set title 'Throughput over time'\n"
          "set xlabel 'seconds'\n"
          "set ylabel 'output tokens/s'\n"
          "set y2label 'requests in flight'\n"
          "set ytics nomirror\n"
          "set y2tics\n"
          "plot 'throughput_over_time.dat' using 1:2 with linespoints title 'output tok/s', \\\n"
          "     '' using 1:3 axes x1y2 with steps title 'in flight'\n";
  }
  gp.close();
  if (!gp) return io_error("--plot " + dir.string() + ": cannot write plots.gp");
  return run_gnuplot(dir / "plots.gp");
}

}  // namespace tierserve::bench

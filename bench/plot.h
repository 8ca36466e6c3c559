// PNG charts of a benchmark, drawn by gnuplot (Debian's gnuplot-nox): the data and the gnuplot
// script are written next to the charts, so they can be redrawn or restyled.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bench/load_generator.h"
#include "bench/serve_metrics.h"
#include "common/status.h"

namespace tierserve::bench {

// Runs `gnuplot script` in the script's directory; an error names what failed (gnuplot missing,
// its exit status).
Status run_gnuplot(const std::filesystem::path& script);

// In `dir` (created): latency_percentiles.png (TTFT, TPOT, ITL and E2EL at p50 ... p99) and,
// with samples, throughput_over_time.png (output tokens/s, requests in flight).
Status write_serve_plots(const std::filesystem::path& dir, const ServeSummary& summary,
                         const LoadResult& load);

}  // namespace tierserve::bench

// `tierserve bench offload MODEL_DIR`: the offload tuning benchmark. Sweeps the weights
// offloaded to the host tier (--cpu-offload-gb-sweep) and to disk (--disk-offload-gb-sweep), the
// prefetch depth and the batch size; for each point: decode tokens/s, time to first token,
// weight bytes streamed per step, stall time, the link bandwidth achieved against the measured
// link bound (host-to-device copy bandwidth; fio's read bandwidth for disk), and the overlap
// efficiency max(compute, transfer) / step time, with compute the all-resident step time at the
// same batch and transfer the streamed bytes over the link bounds. Ends with a recommendation
// per batch size and a chart of tokens/s against offloaded GiB.
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/decode_command.h"

namespace tierserve::bench {

struct OffloadSweepOptions {
  OfflineOptions run;  // model, engine flags, batch sizes, lengths, repeats, result file
  std::vector<double> cpu_offload_gb = {0};
  std::vector<double> disk_offload_gb = {0};
  std::vector<int32_t> prefetch_depths = {2};
  std::string plot_dir;
};

CLI::App* add_bench_offload_command(CLI::App* bench, OffloadSweepOptions& o);
int run_bench_offload(OffloadSweepOptions& o);

}  // namespace tierserve::bench

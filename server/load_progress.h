// LoadProgressPrinter: what `tierserve serve` shows while weights load (an LoadProgressFn,
// engine/model_weights.h). On a terminal, one bar redrawn in place:
//   loading weights [##########..........]  50%  590.0 MiB / 1.17 GiB  (13/26 units)
// Otherwise (a log file, a pipe), plain lines at the first unit, then at each further tenth:
//   loading weights: 50% (590.0 MiB of 1.17 GiB, 13/26 units)
// Not thread-safe: used by the one loading thread.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "engine/model_weights.h"

namespace tierserve {

class LoadProgressPrinter {
 public:
  // Writes to `out` (not owned; stderr for the server); `terminal` picks the bar.
  LoadProgressPrinter(std::FILE* out, bool terminal) : out_(out), terminal_(terminal) {}

  void update(const LoadProgress& progress);

  // The bar's text for `progress`, `width` cells wide (tests).
  static std::string bar(const LoadProgress& progress, int width);

 private:
  std::FILE* out_;
  bool terminal_;
  int last_tenth_ = -1;                                // log lines: the last tenth printed
  std::chrono::steady_clock::time_point last_draw_{};  // terminal: redraws at most every 100 ms
};

}  // namespace tierserve

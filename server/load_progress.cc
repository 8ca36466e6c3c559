#include "server/load_progress.h"

#include "common/units.h"

namespace tierserve {
namespace {

int percent(const LoadProgress& p) {
  if (p.total_bytes == 0) return p.units_done >= p.num_units ? 100 : 0;
  return static_cast<int>(p.bytes_done * 100 / p.total_bytes);
}

}  // namespace

std::string LoadProgressPrinter::bar(const LoadProgress& p, int width) {
  const int pct = percent(p);
  const int filled = pct * width / 100;
  std::string s = "loading weights [";
  s.append(static_cast<size_t>(filled), '#');
  s.append(static_cast<size_t>(width - filled), '.');
  char tail[128];
  std::snprintf(tail, sizeof(tail), "] %3d%%  %s / %s  (%d/%d units)", pct,
                format_bytes(p.bytes_done).c_str(), format_bytes(p.total_bytes).c_str(),
                p.units_done, p.num_units);
  return s + tail;
}

void LoadProgressPrinter::update(const LoadProgress& p) {
  const bool last = p.units_done >= p.num_units;
  if (terminal_) {
    const auto now = std::chrono::steady_clock::now();
    if (!last && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    // \r and erase-to-end-of-line: the bar is redrawn in place, then left on its own line.
    std::fprintf(out_, "\r%s\x1b[K%s", bar(p, 30).c_str(), last ? "\n" : "");
    std::fflush(out_);
    return;
  }
  const int tenth = percent(p) / 10;
  if (tenth <= last_tenth_ && !last) return;
  if (last && last_tenth_ == 10) return;
  last_tenth_ = last ? 10 : tenth;
  std::fprintf(out_, "loading weights: %d%% (%s of %s, %d/%d units)\n", percent(p),
               format_bytes(p.bytes_done).c_str(), format_bytes(p.total_bytes).c_str(),
               p.units_done, p.num_units);
  std::fflush(out_);
}

}  // namespace tierserve

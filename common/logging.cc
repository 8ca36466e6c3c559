#include "common/logging.h"

#include <atomic>
#include <cstdio>

namespace tierserve {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
}  // namespace

void set_log_level(LogLevel level) { g_level.store(level); }
LogLevel log_level() { return g_level.load(); }

namespace internal {
LogMessage::~LogMessage() {
  static const char* kPrefix[] = {"debug", "info", "warning", "error"};
  std::string line = std::string(kPrefix[static_cast<int>(level_)]) + ": " + stream_.str() + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}
}  // namespace internal

}  // namespace tierserve

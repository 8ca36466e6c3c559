// Minimal leveled logging to stderr. Thread-safe: each message is written with one call.
#pragma once

#include <sstream>

namespace tierserve {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Set once in main (from flags), read everywhere.
void set_log_level(LogLevel level);
LogLevel log_level();

namespace internal {
// Buffers one message and writes it with its level prefix when destroyed.
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace internal

}  // namespace tierserve

#define TS_LOG(level)                                                       \
  if (::tierserve::LogLevel::k##level < ::tierserve::log_level()) {         \
  } else                                                                    \
    ::tierserve::internal::LogMessage(::tierserve::LogLevel::k##level).stream()

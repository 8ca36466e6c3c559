// Minimal leveled logging to stderr. Thread-safe: each message is written with one call.
#pragma once

#include <sstream>

namespace tierserve {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Set once in main (from flags), read everywhere.
void set_log_level(LogLevel level);
LogLevel log_level();

namespace internal {
// Lets `cond ? (void)0 : LogVoidify() & stream` type-check.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

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

// TS_LOG(Info) << "message"; the stream is not evaluated when the level is disabled. An
// expression, so it is safe inside an unbraced if.
#define TS_LOG(level)                                          \
  (::tierserve::LogLevel::k##level < ::tierserve::log_level()) \
      ? (void)0                                                \
      : ::tierserve::internal::LogVoidify() &                  \
            ::tierserve::internal::LogMessage(::tierserve::LogLevel::k##level).stream()

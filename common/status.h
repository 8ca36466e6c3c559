// Status and Result<T>: the error type for everything that can fail for reasons outside the code
// (I/O, a bad file, a bad request, a full tier). Broken invariants use TS_CHECK instead.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tierserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // a bad flag, request or value
  kNotFound,           // a missing file or name
  kDataLoss,           // a malformed, truncated or corrupted file or transfer
  kUnimplemented,      // a valid input this build does not support (architecture, dtype)
  kResourceExhausted,  // a full tier or a request that can never fit
  kIoError,            // an operating-system call failed
  kInternal,           // a bug surfaced as an error rather than an abort
};

// Returns a short name such as "invalid argument".
const char* status_code_name(StatusCode code);

// An error code with a human-readable message, or OK. Cheap to move; [[nodiscard]] so that an
// error is never dropped silently.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: <message>", or "ok".
  std::string to_string() const;
  // Returns a copy whose message is "<context>: <message>".
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

Status invalid_argument(std::string message);
Status not_found(std::string message);
Status data_loss(std::string message);
Status unimplemented(std::string message);
Status resource_exhausted(std::string message);
Status io_error(std::string message);
Status internal_error(std::string message);

// A value or an error status. Accessing value() of an error aborts (a bug in the caller).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.is_ok()) status_ = internal_error("Result constructed from an OK status");
  }

  bool is_ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    check_ok();
    return *value_;
  }
  const T& value() const& {
    check_ok();
    return *value_;
  }
  T&& value() && {
    check_ok();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  void check_ok() const;
  std::optional<T> value_;
  Status status_;
};

[[noreturn]] void abort_with_status(const Status& status);

template <typename T>
void Result<T>::check_ok() const {
  if (!value_.has_value()) abort_with_status(status_);
}

}  // namespace tierserve

#define TS_STATUS_CONCAT_INNER(a, b) a##b
#define TS_STATUS_CONCAT(a, b) TS_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is an error.
#define TS_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::tierserve::Status ts_status_ = (expr);    \
    if (!ts_status_.is_ok()) return ts_status_; \
  } while (0)

// `TS_ASSIGN_OR_RETURN(auto x, f())` declares x from a Result, or returns its error.
#define TS_ASSIGN_OR_RETURN(lhs, expr) \
  TS_ASSIGN_OR_RETURN_IMPL(TS_STATUS_CONCAT(ts_result_, __LINE__), lhs, expr)
#define TS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.is_ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

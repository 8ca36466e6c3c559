// TS_CHECK: aborts with the failed condition, its location and a streamed message. For broken
// invariants (bugs) only; anything caused by input returns a Status instead.
#pragma once

#include <sstream>

namespace tierserve::internal {

// Collects the message of a failed check; its destructor prints it and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace tierserve::internal

#define TS_CHECK(cond)                        \
  (cond) ? (void)0                            \
         : ::tierserve::internal::Voidify() & \
               ::tierserve::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define TS_CHECK_EQ(a, b) TS_CHECK((a) == (b)) << (a) << " vs " << (b) << " "
#define TS_CHECK_LT(a, b) TS_CHECK((a) < (b)) << (a) << " vs " << (b) << " "
#define TS_CHECK_LE(a, b) TS_CHECK((a) <= (b)) << (a) << " vs " << (b) << " "
#define TS_CHECK_GT(a, b) TS_CHECK((a) > (b)) << (a) << " vs " << (b) << " "
#define TS_CHECK_GE(a, b) TS_CHECK((a) >= (b)) << (a) << " vs " << (b) << " "

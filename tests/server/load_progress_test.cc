// The weight-loading progress that `tierserve serve` prints: a bar redrawn in place on a
// terminal, plain lines at each further tenth in a log.
#include "server/load_progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "common/units.h"

namespace tierserve {
namespace {

// Everything written to a temporary FILE.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  return s;
}

// Feeds 20 equal units of 100 MiB.
void feed(LoadProgressPrinter& printer) {
  for (int32_t u = 1; u <= 20; ++u) {
    printer.update({u, 20, static_cast<uint64_t>(u) * 100 * kMiB, 2000 * kMiB});
  }
}

TEST(LoadProgressTest, BarShowsShareBytesAndUnits) {
  EXPECT_EQ(LoadProgressPrinter::bar({5, 20, 500 * kMiB, 2000 * kMiB}, 20),
            "loading weights [#####...............]  25%  500.0 MiB / 1.95 GiB  (5/20 units)");
  EXPECT_EQ(LoadProgressPrinter::bar({20, 20, 2000 * kMiB, 2000 * kMiB}, 4),
            "loading weights [####] 100%  1.95 GiB / 1.95 GiB  (20/20 units)");
  // An empty model is done when its units are.
  EXPECT_EQ(LoadProgressPrinter::bar({0, 0, 0, 0}, 2),
            "loading weights [##] 100%  0 B / 0 B  (0/0 units)");
}

TEST(LoadProgressTest, LogGetsTheFirstUnitThenOneLinePerTenth) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  LoadProgressPrinter printer(f, false);
  feed(printer);
  const std::string out = contents(f);
  std::fclose(f);
  EXPECT_EQ(out.find('\r'), std::string::npos) << "no terminal control in a log";
  int lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_EQ(lines, 11) << out;  // the first unit (5%), then 10%, 20%, ..., 100%
  EXPECT_NE(out.find("loading weights: 50% (1000.0 MiB of 1.95 GiB, 10/20 units)\n"),
            std::string::npos)
      << out;
  EXPECT_TRUE(out.ends_with("loading weights: 100% (1.95 GiB of 1.95 GiB, 20/20 units)\n")) << out;
}

TEST(LoadProgressTest, TerminalRedrawsOneLineInPlace) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  LoadProgressPrinter printer(f, true);
  feed(printer);
  const std::string out = contents(f);
  std::fclose(f);
  // Each draw starts with a carriage return; only the final one ends the line.
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  EXPECT_NE(out.rfind("] 100%"), std::string::npos);
}

}  // namespace
}  // namespace tierserve

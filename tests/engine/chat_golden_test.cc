// Renders every case of tests/chat/golden.json (produced by tests/chat/make_golden.py with Debian's
// python3-jinja2, configured as transformers configures it) and compares byte for byte.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "engine/chat/chat_template.h"

namespace tierserve::chat {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The time make_golden.py pins strftime_now to: 2024-09-05 10:30:15 (a Thursday).
std::tm fixed_now() {
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 8;
  tm.tm_mday = 5;
  tm.tm_hour = 10;
  tm.tm_min = 30;
  tm.tm_sec = 15;
  tm.tm_wday = 4;
  tm.tm_yday = 248;
  return tm;
}

// Where two strings first differ, with some context, for a readable failure.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  size_t from = i > 40 ? i - 40 : 0;
  return "at byte " + std::to_string(i) + "\n want: ..." + want.substr(from, 120) + "\n  got: ..." +
         got.substr(from, 120);
}

TEST(ChatGolden, MatchesJinja2) {
  const std::string dir = TIERSERVE_CHAT_TEST_DIR;
  auto golden = nlohmann::ordered_json::parse(read_file(dir + "/golden.json"));
  const auto& cases = golden["cases"];
  ASSERT_GT(cases.size(), 200u);
  RenderOptions options;
  options.now = fixed_now;
  int compared = 0, errors = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    std::string source = c.contains("template")
                             ? read_file(dir + "/templates/" + c["template"].get<std::string>())
                             : c["source"].get<std::string>();
    ASSERT_FALSE(source.empty());
    auto parsed = ChatTemplate::parse(source, name);
    Result<std::string> rendered = parsed.is_ok() ? parsed->render(c["context"], options)
                                                  : Result<std::string>(parsed.status());
    if (c.contains("expected")) {
      ASSERT_TRUE(rendered.is_ok()) << rendered.status().to_string();
      const std::string want = c["expected"].get<std::string>();
      EXPECT_EQ(rendered.value(), want) << first_difference(want, rendered.value());
      ++compared;
    } else {
      ASSERT_FALSE(rendered.is_ok()) << "Jinja2 failed with: " << c["error"].get<std::string>()
                                     << "\nbut we rendered: " << rendered.value();
      ++errors;
      // raise_exception's message and Jinja2's undefined messages must come through verbatim.
      std::string want = c["error"].get<std::string>();
      if (name.rfind("error/syntax", 0) != 0 && name != "error/type_error") {
        EXPECT_NE(rendered.status().message().find(want), std::string::npos)
            << rendered.status().message() << "\n expected to contain: " << want;
      }
      EXPECT_NE(rendered.status().message().find("line "), std::string::npos)
          << rendered.status().message();
    }
  }
  EXPECT_GT(compared, 150);
  EXPECT_GT(errors, 8);
}

}  // namespace
}  // namespace tierserve::chat

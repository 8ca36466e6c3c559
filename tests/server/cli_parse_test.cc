#include <gtest/gtest.h>

#include "server/generate_command.h"

namespace tierserve {
namespace {

TEST(ParseTokenIdsTest, AcceptsCommaSeparatedIds) {
  auto ids = parse_token_ids("1, 2,3");
  ASSERT_TRUE(ids.is_ok());
  EXPECT_EQ(ids.value(), (std::vector<int32_t>{1, 2, 3}));
}

TEST(ParseTokenIdsTest, NamesTheBadItem) {
  for (const char* bad : {"1,x,3", "1,,2", "", "-4", "1,2,", "99999999999"}) {
    auto ids = parse_token_ids(bad);
    ASSERT_FALSE(ids.is_ok()) << bad;
    EXPECT_NE(ids.status().message().find("--prompt-ids: item"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace tierserve

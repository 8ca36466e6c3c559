#include "common/status.h"

#include <gtest/gtest.h>

namespace tierserve {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0) return invalid_argument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> quarter(int x) {
  TS_ASSIGN_OR_RETURN(int h, half(x));
  TS_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = not_found("config.json");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "not found: config.json");
  EXPECT_EQ(s.with_context("model").message(), "model: config.json");
}

TEST(StatusTest, ResultPropagates) {
  auto ok = quarter(12);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok.value(), 3);
  auto bad = quarter(6);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().message(), "3 is odd");
}

TEST(StatusDeathTest, ValueOfErrorAborts) {
  EXPECT_DEATH(
      {
        Result<int> r = invalid_argument("nope");
        (void)r.value();
      },
      "nope");
}

}  // namespace
}  // namespace tierserve

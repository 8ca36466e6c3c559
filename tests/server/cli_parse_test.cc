#include <gtest/gtest.h>

#include "server/engine_flags.h"
#include "server/generate_command.h"
#include "server/serve_command.h"

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

TEST(ParseMaxModelLenTest, AcceptsVllmSuffixes) {
  EXPECT_EQ(parse_max_model_len("4096").value(), 4096);
  EXPECT_EQ(parse_max_model_len("4k").value(), 4000);
  EXPECT_EQ(parse_max_model_len("4K").value(), 4096);
  EXPECT_EQ(parse_max_model_len("32K").value(), 32768);
  EXPECT_EQ(parse_max_model_len("1m").value(), 1000000);
  EXPECT_EQ(parse_max_model_len("1M").value(), 1048576);
  for (const char* bad : {"", "k", "0", "-1", "4x", "4kk", "3000000000", "2048M"}) {
    EXPECT_FALSE(parse_max_model_len(bad).is_ok()) << bad;
  }
}

// `serve` takes vLLM's flags, and an unknown flag is an error naming it.
TEST(ServeFlagsTest, VllmFlagNamesParse) {
  CLI::App app;
  ServeCommandOptions o;
  add_serve_command(app, o);
  app.parse(
      "serve --max-model-len 2K --no-enable-prefix-caching --api-key k --port 0 "
      "--served-model-name a b --swap-space 1 --cpu-offload-gb auto --model dir",
      false);
  EXPECT_EQ(o.model_flag, "dir");
  EXPECT_EQ(o.engine.max_model_len, 2048);
  EXPECT_FALSE(o.engine.enable_prefix_caching);
  EXPECT_EQ(o.http.api_key, "k");
  EXPECT_EQ(o.served_model_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(o.engine.kv_offloading_size_gb, 1.0);
  EXPECT_FALSE(o.engine.cpu_offload_gb.has_value());
  CLI::App app2;
  ServeCommandOptions o2;
  add_serve_command(app2, o2);
  try {
    app2.parse("serve dir --no-such-flag", false);
    ADD_FAILURE() << "an unknown flag parsed";
  } catch (const CLI::ParseError& e) {
    EXPECT_NE(std::string(e.what()).find("--no-such-flag"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tierserve

// The policy section of the config file and the grants computed from it: what each rule
// matches, how patterns are covered, the $sys. boundary, and errors that name their line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>

#include "config.hpp"
#include "policy.hpp"

namespace ubroker::broker {
namespace {

std::expected<Config, std::string> load(const std::string& text) {
  char path[] = "/tmp/ubroker-policy-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  Config c;
  auto r = load_config_file(path, c);
  ::unlink(path);
  if (!r) return std::unexpected(r.error());
  return c;
}

// Grants for a peer, with 999 as the broker's own uid.
Grants grants(const Config& c, uid_t uid, gid_t gid, const std::vector<gid_t>& groups = {}) {
  return Grants(std::make_shared<const Policy>(c.policy), {.uid = uid, .gid = gid, .groups = groups}, 999);
}

TEST(PolicyConfig, RulesAddUpPerIdentity) {
  auto c = load(R"(
[[policy.allow]]
uids = [4040]
publish = ["a.>"]
[[policy.allow]]
gids = [50]
subscribe = ["b.*"]
admin = ["status"]
)");
  ASSERT_TRUE(c.has_value()) << c.error();
  const auto both = grants(*c, 4040, 1, {50});
  EXPECT_TRUE(both.allows_topic(Right::kPublish, "a.x.y"));
  EXPECT_TRUE(both.allows_pattern(Right::kSubscribe, "b.c"));
  EXPECT_TRUE(both.allows_topic(Right::kAdmin, "status"));
  EXPECT_FALSE(both.allows_topic(Right::kAdmin, "kick"));
  const auto only_uid = grants(*c, 4040, 1);
  EXPECT_FALSE(only_uid.allows_pattern(Right::kSubscribe, "b.c"));
  const auto stranger = grants(*c, 4041, 1);
  EXPECT_FALSE(stranger.any());
  EXPECT_TRUE(grants(*c, 999, 1).all());  // the broker's own uid
  EXPECT_TRUE(grants(*c, 0, 1).all());    // root
}

TEST(PolicyConfig, GrantsStopAtTheBrokersOwnTopicsUnlessTheyNameThem) {
  auto c = load("[[policy.allow]]\neveryone = true\nsubscribe = [\">\", \"$sys.service.*\"]\npublish = [\">\"]\n");
  ASSERT_TRUE(c.has_value()) << c.error();
  const auto g = grants(*c, 4040, 4040);
  EXPECT_TRUE(g.allows_pattern(Right::kSubscribe, "a.>"));
  EXPECT_FALSE(g.allows_pattern(Right::kSubscribe, ">"));       // would match $sys. topics
  EXPECT_FALSE(g.allows_pattern(Right::kSubscribe, "*.client.>"));
  EXPECT_FALSE(g.allows_pattern(Right::kSubscribe, "$sys.client.>"));
  EXPECT_TRUE(g.allows_pattern(Right::kSubscribe, "$sys.service.up"));
  EXPECT_FALSE(g.allows_topic(Right::kPublish, "$sys.client.connected"));
  EXPECT_TRUE(g.allows_topic(Right::kPublish, "x"));
}

TEST(PolicyConfig, UserAndGroupNamesResolveWhenLoaded) {
  auto c = load("[[policy.allow]]\nusers = [\"root\", \"daemon\"]\ngroups = [\"users\"]\npublish = [\"x\"]\n");
  ASSERT_TRUE(c.has_value()) << c.error();
  ASSERT_EQ(c->policy.rules.size(), 1u);
  EXPECT_EQ(c->policy.rules[0].uids, (std::vector<uid_t>{0, 1}));
  EXPECT_EQ(c->policy.rules[0].gids, (std::vector<gid_t>{100}));
}

TEST(PolicyConfig, ErrorsNameTheLineAndTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"[[policy.allow]]\nusers = [\"no-such-user-x\"]\npublish = [\"x\"]\n", "line 2: no user named 'no-such-user-x'"},
      {"[[policy.allow]]\ngroups = [\"no-such-group-x\"]\npublish = [\"x\"]\n", "no group named 'no-such-group-x'"},
      {"[[policy.allow]]\nuids = [1]\npublish = [\"a..b\"]\n", "line 3: 'publish' has an invalid pattern 'a..b'"},
      {"[[policy.allow]]\npublish = [\"x\"]\n", "line 1: a policy rule names nobody"},
      {"[[policy.allow]]\nuids = [1]\n", "line 1: a policy rule grants nothing"},
      {"[[policy.allow]]\nuids = [1]\nwrite = [\"x\"]\n", "line 3: unknown key 'write' in a policy rule"},
      {"[policy]\nclosed = true\n", "unknown key 'policy.closed'"},
      {"[policy]\nopen = \"yes\"\n", "'policy.open' must be true or false"},
      {"socket_group = \"no-such-group-x\"\n", "no group named 'no-such-group-x'"},
  };
  for (const auto& [text, expected] : cases) {
    auto c = load(text);
    ASSERT_FALSE(c.has_value()) << text;
    EXPECT_NE(c.error().find(expected), std::string::npos) << c.error();
  }
}

TEST(PolicyConfig, OpenAllowsEveryone) {
  auto c = load("[policy]\nopen = true\n");
  ASSERT_TRUE(c.has_value());
  const auto g = grants(*c, 4040, 4040);
  EXPECT_TRUE(g.all());
  EXPECT_TRUE(g.allows_pattern(Right::kSubscribe, ">"));
}

TEST(PolicyConfig, PerUidQueueBudgetMustHoldOneClientsQueue) {
  auto c = load("[limits]\nqueue_max_bytes = 4194304\nqueue_max_bytes_per_uid = 65536\n");
  ASSERT_TRUE(c.has_value());
  auto v = validate(*c);
  ASSERT_FALSE(v.has_value());
  EXPECT_NE(v.error().find("queue_max_bytes_per_uid"), std::string::npos);
}

}  // namespace
}  // namespace ubroker::broker

// Topic and pattern syntax, and the reference matcher.
#include "ubroker/proto/topic.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ubroker::proto {
namespace {

TEST(Topic, ValidTopics) {
  for (const char* t : {"a", "sensors.kitchen.temp", "$sys.client.connected", "a-b_c.D9"}) {
    EXPECT_EQ(check_topic(t), nullptr) << t;
  }
}

TEST(Topic, InvalidTopics) {
  for (const char* t : {"", ".a", "a.", "a..b", "a b", "a.*", "a.>", "a*", "x>y", "tab\there"}) {
    EXPECT_NE(check_topic(t), nullptr) << t;
  }
  EXPECT_NE(check_topic(std::string(kMaxTopicBytes + 1, 'a')), nullptr);
  EXPECT_EQ(check_topic(std::string(kMaxTopicBytes, 'a')), nullptr);
  EXPECT_NE(check_topic("caf\xc3\xa9"), nullptr);
}

TEST(Topic, Patterns) {
  for (const char* p : {"a", "*", ">", "a.*.c", "a.>", "*.*"}) EXPECT_EQ(check_pattern(p), nullptr) << p;
  for (const char* p : {"", "a.>.b", "a*", ">.a", "a..*"}) EXPECT_NE(check_pattern(p), nullptr) << p;
  EXPECT_TRUE(is_wildcard("a.*"));
  EXPECT_TRUE(is_wildcard(">"));
  EXPECT_FALSE(is_wildcard("a.b"));
}

TEST(Topic, Matching) {
  struct Case {
    const char* pattern;
    const char* topic;
    bool match;
  };
  const Case cases[] = {
      {"a.b", "a.b", true},    {"a.b", "a.c", false},    {"a.b", "a.b.c", false}, {"a.*", "a.b", true},
      {"a.*", "a.b.c", false}, {"a.*", "a", false},      {"a.>", "a.b", true},    {"a.>", "a.b.c", true},
      {"a.>", "a", false},     {">", "a", true},         {">", "a.b.c", true},    {"*", "a", true},
      {"*", "a.b", false},     {"*.b.>", "x.b.c", true}, {"*.b.>", "x.b", false}, {"a.*.c", "a.x.c", true},
  };
  for (const auto& c : cases) EXPECT_EQ(pattern_matches(c.pattern, c.topic), c.match) << c.pattern << " " << c.topic;
}

}  // namespace
}  // namespace ubroker::proto

// Topic and pattern syntax, and the reference matcher.
#include "ubroker/proto/topic.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

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

TEST(Topic, CoversExamples) {
  EXPECT_TRUE(pattern_covers(">", "a.*"));
  EXPECT_TRUE(pattern_covers("a.>", "a.b.>"));
  EXPECT_TRUE(pattern_covers("a.*", "a.b"));
  EXPECT_TRUE(pattern_covers("a.*.c", "a.*.c"));
  EXPECT_FALSE(pattern_covers("a.*", "a.>"));     // a.> also matches a.b.c
  EXPECT_FALSE(pattern_covers("a.b", "a.*"));     // a.* also matches a.c
  EXPECT_FALSE(pattern_covers("a.>", "a"));       // '>' needs a token
  EXPECT_FALSE(pattern_covers("a.>", ">"));
  EXPECT_FALSE(pattern_covers("*.b", "a.*"));
}

// Against the definition: `outer` covers `inner` exactly when every topic `inner` matches,
// `outer` matches too. Topics over {a, b, x} up to one token longer than the patterns are
// enough to find a counterexample ('x' stands for any token a pattern does not name).
TEST(Topic, CoversAgreesWithMatchingOnEveryTopic) {
  std::vector<std::string> patterns, topics;
  const char* tokens[] = {"a", "b", "*", ">"};
  std::function<void(std::string, int)> grow = [&](std::string p, int depth) {
    if (!p.empty()) patterns.push_back(p);
    if (depth == 3 || p.ends_with(">")) return;
    for (const char* t : tokens) grow(p.empty() ? t : p + "." + t, depth + 1);
  };
  grow("", 0);
  std::function<void(std::string, int)> grow_topic = [&](std::string t, int depth) {
    if (!t.empty()) topics.push_back(t);
    if (depth == 4) return;
    for (const char* tok : {"a", "b", "x"}) grow_topic(t.empty() ? tok : t + "." + tok, depth + 1);
  };
  grow_topic("", 0);
  int covered = 0;
  for (const auto& outer : patterns) {
    for (const auto& inner : patterns) {
      bool every = true;
      for (const auto& t : topics) every = every && (!pattern_matches(inner, t) || pattern_matches(outer, t));
      EXPECT_EQ(pattern_covers(outer, inner), every) << outer << " covers " << inner;
      covered += every;
    }
  }
  EXPECT_GT(covered, static_cast<int>(patterns.size()));  // more than the reflexive pairs
}

}  // namespace
}  // namespace ubroker::proto

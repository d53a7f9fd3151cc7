// The trie index must agree with the reference matcher on every pattern/topic pair.
#include "topic_index.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

std::string random_topic(std::mt19937& rng, bool pattern) {
  static const char* tokens[] = {"a", "b", "c", "dd"};
  std::uniform_int_distribution<int> len(1, 4), tok(0, pattern ? 5 : 3);
  const int n = len(rng);
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += '.';
    const int t = tok(rng);
    if (t == 4)
      s += '*';
    else if (t == 5) {
      s += '>';
      break;
    } else
      s += tokens[t];
  }
  return s;
}

TEST(TopicIndex, AgreesWithReferenceMatcher) {
  std::mt19937 rng(42);
  std::vector<std::string> patterns;
  for (int i = 0; i < 300; ++i) patterns.push_back(random_topic(rng, true));
  TopicIndex<int> index;
  for (int i = 0; i < static_cast<int>(patterns.size()); ++i) index.insert(patterns[i], i);
  // Remove every third again: erase must keep the rest intact.
  std::set<int> live;
  for (int i = 0; i < static_cast<int>(patterns.size()); ++i) {
    if (i % 3 == 0)
      index.erase(patterns[i], i);
    else
      live.insert(i);
  }
  for (int k = 0; k < 2000; ++k) {
    const std::string topic = random_topic(rng, false);
    std::multiset<int> got;
    index.match(topic, [&](int e) { got.insert(e); });
    std::multiset<int> want;
    for (int i : live) {
      if (proto::pattern_matches(patterns[i], topic)) want.insert(i);
    }
    ASSERT_EQ(got, want) << topic;
  }
}

TEST(TopicIndex, EmptyAfterErasingEverything) {
  TopicIndex<int> index;
  index.insert("a.*.c", 1);
  index.insert("a.>", 2);
  index.insert("a.b", 3);
  index.erase("a.*.c", 1);
  index.erase("a.>", 2);
  index.erase("a.b", 3);
  EXPECT_TRUE(index.empty());
}

}  // namespace
}  // namespace ubroker::broker

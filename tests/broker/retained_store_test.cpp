// The retained store without a broker: the index finds exactly what proto::pattern_matches
// says, in topic order, and resumes anywhere; values are charged to their publisher's uid and
// evicted from the biggest holder first; a paced replay with writes between its steps ends
// with the subscriber holding every current value, each handed out once per change.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "accounts.hpp"
#include "retained_store.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::broker {
namespace {

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }
std::string text(const std::vector<std::byte>& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

std::vector<std::string> random_topics(std::mt19937& rng, std::size_t n) {
  static const char* kTokens[] = {"a", "b", "ab", "a-b", "c", "x", "long_token", "z"};
  std::set<std::string> topics;
  while (topics.size() < n) {
    std::string t;
    const int len = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < len; ++i) t += std::string(i ? "." : "") + kTokens[rng() % std::size(kTokens)];
    topics.insert(t);
  }
  return {topics.begin(), topics.end()};
}

TEST(RetainedIndex, WalksExactlyTheMatchesInTopicOrderAndResumesAnywhere) {
  std::mt19937 rng(7);
  const auto topics = random_topics(rng, 300);
  RetainedIndex<const std::string> index;
  for (const auto& t : topics) index.set(t, &t);
  const std::vector<std::string> patterns = {">",   "a",   "a.>",   "*",     "*.b",   "a.*.c", "*.*",
                                             "x.>", "z.*", "a-b.>", "*.*.*", "b.a.>", "nope.>"};
  for (const auto& pattern : patterns) {
    std::vector<std::string> want;
    for (const auto& t : topics) {
      if (proto::pattern_matches(pattern, t)) want.push_back(t);
    }
    std::sort(want.begin(), want.end(), [](const auto& a, const auto& b) { return topic_less(a, b); });
    std::vector<std::string> got;
    EXPECT_TRUE(index.walk(pattern, "", [&](const std::string& t) {
      got.push_back(t);
      return true;
    }));
    EXPECT_EQ(got, want) << pattern;
    // Stopping after every value and resuming from it gives the same sequence.
    std::vector<std::string> stepped;
    std::string after;
    for (;;) {
      bool took = false;
      const bool done = index.walk(pattern, after, [&](const std::string& t) {
        if (took) return false;
        took = true;
        stepped.push_back(t);
        after = t;
        return true;
      });
      if (done) break;
    }
    EXPECT_EQ(stepped, want) << pattern;
  }
}

TEST(RetainedIndex, ErasePrunesAndTopicOrderIsTokenwise) {
  RetainedIndex<const int> index;
  const int one = 1;
  index.set("a.b.c", &one);
  index.erase("a.b.c");
  EXPECT_TRUE(index.empty());
  EXPECT_TRUE(topic_less("a", "a.b"));
  EXPECT_TRUE(topic_less("a.b", "a-b"));  // token "a" before "a-b", though '.' > '-' bytewise
  EXPECT_FALSE(topic_less("a.b", "a.b"));
}

class RetainedStoreTest : public ::testing::Test {
 protected:
  Limits limits_;
  Accounts accounts_{limits_};
};

TEST_F(RetainedStoreTest, ValuesAreChargedToTheirPublishersUidAtTheirCost) {
  RetainedStore store(1 << 20, accounts_);
  store.put("a.b", bytes("hello"), 1, 1000, 10);
  store.put("c", bytes("x"), 2, 1001, 11);
  const auto cost_ab = RetainedStore::cost("a.b", 5);
  EXPECT_GT(cost_ab, 5u + 3u);  // the real cost, not the payload and topic alone
  EXPECT_EQ(accounts_.find(1000)->used(Resource::kRetainedBytes), cost_ab);
  EXPECT_EQ(store.bytes(), cost_ab + RetainedStore::cost("c", 1));
  store.put("a.b", bytes("bye"), 3, 1001, 11);  // taken over by another uid
  EXPECT_EQ(accounts_.find(1000), nullptr);     // nothing left charged to 1000
  store.put("a.b", {}, 3, 1001, 11);            // cleared
  store.put("c", {}, 3, 1001, 11);
  EXPECT_EQ(store.bytes(), 0u);
  EXPECT_EQ(accounts_.find(1001), nullptr);
}

TEST_F(RetainedStoreTest, AUidPastItsShareEvictsItsOwnAndAFullStoreTheBiggestHolders) {
  const auto each = RetainedStore::cost("q.00", 100);
  limits_.retained_max_bytes_per_uid = 10 * each;
  RetainedStore store(15 * each, accounts_);
  const std::string payload(100, 'p');
  store.put("quiet.00", bytes(payload.substr(0, 99)), 1, 2000, 1);  // one value of a quiet uid
  for (int i = 0; i < 50; ++i) {  // a flood from another uid
    store.put(fmt::format("q.{:02}", i), bytes(payload), 2, 3000, 2);
  }
  EXPECT_TRUE(store.contains("quiet.00"));
  EXPECT_EQ(accounts_.find(3000)->used(Resource::kRetainedBytes), 10 * each);
  EXPECT_TRUE(store.contains("q.49"));
  EXPECT_FALSE(store.contains("q.39"));
  EXPECT_EQ(store.evicted(), 40u);
  // A full store: a third uid's values push out the biggest holder's oldest, not the quiet one.
  for (int i = 0; i < 6; ++i) store.put(fmt::format("r.{:02}", i), bytes(payload), 3, 4000, 3);
  EXPECT_TRUE(store.contains("quiet.00"));
  EXPECT_LE(store.bytes(), 15 * each);
  EXPECT_FALSE(store.contains("q.40"));
  EXPECT_TRUE(store.contains("r.05"));
}

TEST_F(RetainedStoreTest, APacedReplayWithWritesBetweenStepsMissesNoUpdateAndDoublesNothing) {
  RetainedStore store(64 << 20, accounts_);
  std::mt19937 rng(11);
  const auto topics = random_topics(rng, 200);
  for (const auto& t : topics) store.put(t, bytes("v0 " + t), 1, 1000, 1);
  RetainedReplay replay;
  std::map<std::string, std::string> seen;  // what the subscriber holds
  std::map<std::string, int> handed;
  int step = 0;
  for (;;) {
    int budget = 7;
    const bool done = store.replay(">", replay, [&](const RetainedMessage& m) {
      if (budget-- == 0) return false;
      seen[m.topic] = text(m.payload);
      ++handed[m.topic];
      return true;
    });
    if (done) break;
    // Between steps: rewrite topics before and after the cursor.
    for (int i = 0; i < 5; ++i) {
      const auto& t = topics[rng() % topics.size()];
      store.put(t, bytes(fmt::format("v{} {}", ++step, t)), 1, 1000, 1);
    }
  }
  std::size_t current = 0;
  RetainedReplay fresh;
  store.replay(">", fresh, [&](const RetainedMessage& m) {
    ++current;
    EXPECT_EQ(seen[m.topic], text(m.payload)) << m.topic;
    return true;
  });
  EXPECT_EQ(current, topics.size());
  EXPECT_EQ(seen.size(), topics.size());
  // Handed more than once only if it changed after it was handed out.
  std::size_t extra = 0;
  for (const auto& [t, n] : handed) extra += static_cast<std::size_t>(n - 1);
  EXPECT_LE(extra, static_cast<std::size_t>(step));
}

}  // namespace
}  // namespace ubroker::broker

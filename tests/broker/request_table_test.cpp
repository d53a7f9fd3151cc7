// The request table without a broker: every path frees its entry, the deadline heap stays
// within twice the requests pending however many were answered, and replies whose caller
// left are recognised as such (not blamed on the responder).
#include <gtest/gtest.h>

#include "request_table.hpp"

namespace ubroker::broker {
namespace {

using Clock = RequestTable::Clock;

TEST(RequestTable, AnsweredRequestsLeaveNothingBehindWhateverTheirDeadlines) {
  RequestTable table;
  const auto far = Clock::now() + std::chrono::hours(1);
  for (int i = 0; i < 100'000; ++i) {
    const auto id = table.add({.caller = 1, .caller_seq = static_cast<std::uint64_t>(i), .responder = 2, .deadline = far});
    ASSERT_TRUE(table.take_reply(id, 2).has_value());
    ASSERT_LE(table.deadline_entries(), 2 * table.size() + 65);
  }
  EXPECT_EQ(table.size(), 0u);
  EXPECT_FALSE(table.next_deadline().has_value());
}

TEST(RequestTable, RepliesOnlyFromTheResponderAndExpiryInDeadlineOrder) {
  RequestTable table;
  const auto now = Clock::now();
  const auto late = table.add({.caller = 1, .caller_seq = 10, .responder = 2, .deadline = now + std::chrono::seconds(2)});
  const auto early = table.add({.caller = 1, .caller_seq = 11, .responder = 2, .deadline = now + std::chrono::seconds(1)});
  EXPECT_FALSE(table.take_reply(late, 3).has_value());  // someone else's
  EXPECT_EQ(table.find(late, 2)->caller_seq, 10u);
  std::vector<std::uint64_t> expired;
  table.expire(now + std::chrono::milliseconds(1500), [&](const PendingRequest& p) { expired.push_back(p.id); });
  EXPECT_EQ(expired, std::vector<std::uint64_t>{early});
  EXPECT_TRUE(table.take_reply(late, 2).has_value());
  EXPECT_FALSE(table.take_reply(late, 2).has_value());  // answered once
}

TEST(RequestTable, ACallerLeavingAbandonsItsRequestsAndARespondersLeavingAnswersThem) {
  RequestTable table;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  const auto to_gone_caller = table.add({.caller = 1, .caller_seq = 1, .responder = 2, .deadline = deadline});
  const auto from_other = table.add({.caller = 3, .caller_seq = 7, .responder = 4, .deadline = deadline});
  table.drop_session(1, [](const PendingRequest&) { ADD_FAILURE() << "caller 1 answered nothing"; });
  EXPECT_FALSE(table.take_reply(to_gone_caller, 2).has_value());
  EXPECT_FALSE(table.take_abandoned(to_gone_caller, 9));  // not the responder it went to
  EXPECT_TRUE(table.take_abandoned(to_gone_caller, 2));
  EXPECT_FALSE(table.take_abandoned(to_gone_caller, 2));  // once
  std::vector<std::uint64_t> gone;
  table.drop_session(4, [&](const PendingRequest& p) { gone.push_back(p.caller_seq); });
  EXPECT_EQ(gone, std::vector<std::uint64_t>{7});
  EXPECT_FALSE(table.find(from_other, 4));
  EXPECT_EQ(table.size(), 0u);
}

}  // namespace
}  // namespace ubroker::broker

// The broker at the end of its resources: out of file descriptors it keeps serving the
// clients it has, backs off accepting, says so once per interval, and recovers.
#include <gtest/gtest.h>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Resources, OutOfFdsTheBrokerServesItsClientsBacksOffAndRecovers) {
  BrokerProcess broker("", {}, {"/usr/bin/prlimit", "--nofile=48:48", "--"});
  std::vector<Client> clients;
  std::optional<Error> refused;
  for (int i = 0; i < 60 && !refused; ++i) {
    auto c = Client::connect({.address = broker.socket(),
                              .name = "filler",
                              .timeout = 300ms,
                              .reconnect = {.enabled = false}});
    if (c) {
      clients.push_back(std::move(*c));
    } else {
      refused = c.error();
    }
  }
  ASSERT_TRUE(refused.has_value()) << "48 fds never ran out";
  // Either accepting itself failed (the connection waits in the backlog until the client gives
  // up) or it took the last fd and the broker said why it could go no further.
  if (refused->code == Errc::kLimitExceeded) {
    EXPECT_NE(refused->message.find("out of file descriptors"), std::string::npos) << refused->message;
  } else {
    EXPECT_EQ(refused->code, Errc::kTimeout) << refused->message;
  }
  ASSERT_GE(clients.size(), 10u);
  // The connected clients are still served.
  auto sub = clients[0].subscribe("still.here");
  ASSERT_TRUE(sub.has_value()) << sub.error().message;
  ASSERT_TRUE(clients[1].publish("still.here", "yes").has_value());
  auto m = clients[0].receive(5s);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  // More refused connections add no log line.
  for (int i = 0; i < 10; ++i) {
    auto c = Client::connect({.address = broker.socket(), .timeout = 300ms, .reconnect = {.enabled = false}});
    EXPECT_FALSE(c.has_value());
  }
  const auto st = broker_status(clients[2]);
  EXPECT_GE(st.accepts_failed(), 11u);
  const std::string log = broker.process().err();
  EXPECT_EQ(occurrences(log, "cannot accept connections"), 1u) << log;
  EXPECT_NE(log.find("RLIMIT_NOFILE 48"), std::string::npos) << log;
  // Fds come back: accepting resumes, and says so.
  clients.erase(clients.end() - 8, clients.end());
  auto back = Client::connect({.address = broker.socket(), .timeout = 5s, .reconnect = {.enabled = false}});
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_TRUE(back->flush().has_value());
  EXPECT_TRUE(eventually([&] { return broker.process().err().find("accepting connections again") != std::string::npos; }));
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace ubroker::test

// Hostile and broken input: each gets its own error code and a close (or, for refusals that
// are not protocol violations, an error and a connection that still works), and the broker
// goes on serving everyone else.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"
#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::test {
namespace {

class Hostile : public ::testing::Test {
 protected:
  // A well-behaved pair that must keep working through every scenario.
  void expect_bystanders_fine() {
    ASSERT_TRUE(pub_.publish("bystander", "still here").has_value());
    auto m = sub_.receive(std::chrono::seconds(5));
    ASSERT_TRUE(m.has_value()) << m.error().message;
    EXPECT_EQ(m->text(), "still here");
  }
  void SetUp() override { sub_handle_ = std::move(sub_.subscribe("bystander").value()); }

  void expect_fatal(RawConnection& raw, wire::ErrorCode code) {
    auto f = raw.read_frame();
    ASSERT_TRUE(f.has_value()) << "no error frame";
    EXPECT_EQ(f->type(), wire::ERROR);
    EXPECT_EQ(f->error().code(), code) << f->error().message();
    EXPECT_TRUE(f->error().fatal());
    EXPECT_FALSE(f->error().message().empty());
    EXPECT_TRUE(raw.wait_closed());
  }

  BrokerProcess broker_{"[limits]\nmax_frame_bytes = 65536\n"};
  Client pub_ = broker_.connect("bystander-pub");
  Client sub_ = broker_.connect("bystander-sub");
  Subscription sub_handle_;
};

TEST_F(Hostile, GarbageBeforeHandshake) {
  RawConnection raw(broker_.socket());
  raw.send_text("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  expect_fatal(raw, wire::FRAME_TOO_LARGE);  // "GET " read as a frame length
  expect_bystanders_fine();
}

TEST_F(Hostile, FrameBeforeHello) {
  RawConnection raw(broker_.socket());
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("a");
  raw.send_frame(h, "x");
  expect_fatal(raw, wire::PROTOCOL_ERROR);
  expect_bystanders_fine();
}

TEST_F(Hostile, OversizedFrameAfterHandshake) {
  RawConnection raw(broker_.socket());
  raw.hello();
  std::byte prefix[proto::kPrefixSize];
  proto::write_prefix(prefix, 65537, 4);
  raw.send_bytes(prefix);
  expect_fatal(raw, wire::FRAME_TOO_LARGE);
  expect_bystanders_fine();
}

TEST_F(Hostile, MalformedHeader) {
  RawConnection raw(broker_.socket());
  raw.hello();
  std::byte frame[proto::kPrefixSize + 3];
  proto::write_prefix(frame, 3, 3);
  std::memset(frame + proto::kPrefixSize, 0xff, 3);
  raw.send_bytes(frame);
  expect_fatal(raw, wire::PROTOCOL_ERROR);
  expect_bystanders_fine();
}

TEST_F(Hostile, ZeroLengthAndBadHeaderLength) {
  for (auto [frame_len, header_len] : {std::pair{0u, 0u}, std::pair{10u, 20u}}) {
    RawConnection raw(broker_.socket());
    raw.hello();
    std::byte prefix[proto::kPrefixSize];
    proto::write_prefix(prefix, frame_len, header_len);
    raw.send_bytes(prefix);
    expect_fatal(raw, wire::PROTOCOL_ERROR);
  }
  expect_bystanders_fine();
}

TEST_F(Hostile, BrokerOnlyFrameTypesFromAClient) {
  for (auto type : {wire::DELIVER, wire::WELCOME, wire::ACK, wire::PONG, wire::ERROR}) {
    RawConnection raw(broker_.socket());
    raw.hello();
    wire::Header h;
    h.set_type(type);
    raw.send_frame(h);
    expect_fatal(raw, wire::PROTOCOL_ERROR);
  }
  expect_bystanders_fine();
}

TEST_F(Hostile, UnexpectedFileDescriptor) {
  RawConnection raw(broker_.socket());
  raw.hello();
  wire::Header h;
  h.set_type(wire::PING);
  h.set_seq(1);
  std::vector<std::byte> frame(proto::frame_head_size(h));
  proto::write_frame_head(frame.data(), h, 0);
  const int fds[] = {STDERR_FILENO};
  const iovec iov{.iov_base = frame.data(), .iov_len = frame.size()};
  ASSERT_TRUE(proto::send(raw.fd(), std::span(&iov, 1), fds).has_value());
  // The PING is answered (it claims no fd); then the fd nobody claims closes the connection.
  auto pong = raw.read_frame();
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->type(), wire::PONG);
  expect_fatal(raw, wire::FD_ERROR);
  expect_bystanders_fine();
}

TEST_F(Hostile, TruncatedFrameThenHangUp) {
  {
    RawConnection raw(broker_.socket());
    raw.hello();
    std::byte prefix[proto::kPrefixSize];
    proto::write_prefix(prefix, 100, 10);
    raw.send_bytes(prefix);
    raw.send_text("half");
  }  // closed mid-frame
  expect_bystanders_fine();
  EXPECT_TRUE(eventually([&] { return broker_.process().err().find("inside a frame") != std::string::npos; }))
      << broker_.process().err();
}

TEST_F(Hostile, RefusalsThatAreNotViolationsKeepTheConnection) {
  RawConnection raw(broker_.socket());
  raw.hello();
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("$sys.client.connected");
  raw.send_frame(h, "forged");
  auto f = raw.read_frame();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error().code(), wire::RESERVED_TOPIC);
  EXPECT_FALSE(f->error().fatal());
  wire::Header sub;
  sub.set_type(wire::SUBSCRIBE);
  sub.set_seq(5);
  sub.add_sub_ids(1);
  sub.set_topic("a.>.b");
  raw.send_frame(sub);
  f = raw.read_frame();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->error().code(), wire::INVALID_PATTERN);
  EXPECT_EQ(f->seq(), 5u);
  wire::Header ping;
  ping.set_type(wire::PING);
  ping.set_seq(6);
  raw.send_frame(ping);
  f = raw.read_frame();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->type(), wire::PONG);
  EXPECT_EQ(f->seq(), 6u);
  expect_bystanders_fine();
}

TEST_F(Hostile, ClientTextInTheLogIsEscapedAndRefusalsAreRateLimited) {
  RawConnection raw(broker_.socket());
  raw.hello();
  wire::Header h;
  h.set_type(wire::PUBLISH);
  h.set_topic("$sys.forged\n[info] brokerd: all is well\x1b[2J");
  for (int i = 0; i < 5000; ++i) raw.send_frame(h, "x");
  wire::Header ping;
  ping.set_type(wire::PING);
  ping.set_seq(9);
  raw.send_frame(ping);
  for (;;) {  // 5,000 refusals, then the PONG
    auto f = raw.read_frame();
    ASSERT_TRUE(f.has_value());
    if (f->type() == wire::PONG) break;
  }
  ASSERT_TRUE(eventually([&] { return broker_.process().err().find("$sys.forged") != std::string::npos; }));
  const std::string log = broker_.process().err();
  EXPECT_NE(log.find("$sys.forged\\x0a[info] brokerd: all is well\\x1b[2J"), std::string::npos) << log;
  EXPECT_EQ(log.find("\n[info] brokerd: all is well"), std::string::npos) << "a forged line reached the log";
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "an escape sequence reached the log";
  std::size_t lines = 0;
  for (std::size_t at = 0; (at = log.find("$sys.forged", at)) != std::string::npos; ++at) ++lines;
  EXPECT_LE(lines, 2u) << "5,000 refusals, logged at most once per 10 s";
  expect_bystanders_fine();
}

TEST_F(Hostile, AProcessNameThatIsNotTextIsShownPrintable) {
  char saved[17] = {};
  ASSERT_EQ(::prctl(PR_GET_NAME, saved), 0);
  ASSERT_EQ(::prctl(PR_SET_NAME, "\xff\xfe\x1b[31mred"), 0);  // what /proc/PID/comm will say
  Client named = broker_.connect("weird-comm");
  ASSERT_EQ(::prctl(PR_SET_NAME, saved), 0);
  wire::ClientList list;
  auto r = pub_.request("$sys.admin.clients", std::string_view{}, std::chrono::seconds(5));
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(list.ParseFromArray(r->payload().data(), static_cast<int>(r->payload().size())));
  bool found = false;
  for (const auto& c : list.clients()) {
    if (c.name() != "weird-comm") continue;
    found = true;
    EXPECT_EQ(c.command(), "???[31mred");
  }
  EXPECT_TRUE(found);
}

TEST_F(Hostile, DuplicateAndUnknownSubscriptionIds) {
  RawConnection raw(broker_.socket());
  raw.hello();
  wire::Header sub;
  sub.set_type(wire::SUBSCRIBE);
  sub.set_seq(1);
  sub.add_sub_ids(9);
  sub.set_topic("a");
  raw.send_frame(sub);
  EXPECT_EQ(raw.read_frame()->type(), wire::ACK);
  sub.set_seq(2);
  raw.send_frame(sub);
  EXPECT_EQ(raw.read_frame()->error().code(), wire::DUPLICATE_SUBSCRIPTION);
  wire::Header unsub;
  unsub.set_type(wire::UNSUBSCRIBE);
  unsub.set_seq(3);
  unsub.add_sub_ids(10);
  raw.send_frame(unsub);
  EXPECT_EQ(raw.read_frame()->error().code(), wire::UNKNOWN_SUBSCRIPTION);
}

}  // namespace
}  // namespace ubroker::test

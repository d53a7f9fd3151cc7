// Lanes (lane_layout.hpp, lane.hpp): messages in order through the ring and around its end,
// a full lane and its wake-ups, each side unable to write what the other reads, and each
// side refusing every field the other could corrupt.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ubroker/shm/lane.hpp"

namespace ubroker::shm {
namespace {

using std::chrono::milliseconds;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }
std::string text_of(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

struct Pair {
  LaneWriter writer;
  LaneReader reader;
};
Pair make_pair(std::uint64_t capacity) {
  auto w = LaneWriter::create(capacity);
  auto r = LaneReader::create();
  EXPECT_TRUE(w && r);
  EXPECT_TRUE(w->attach(r->ack_fd()));
  EXPECT_TRUE(r->attach(w->data_fd(), capacity));
  return {std::move(*w), std::move(*r)};
}

std::string next_text(LaneReader& r) {
  auto m = r.peek();
  EXPECT_TRUE(m.has_value());
  if (!m || !*m) return "<none>";
  std::string t = text_of(**m);
  r.consume();
  return t;
}

TEST(Lane, OnlyOneEndOfAUnixStreamSocketPairIsTakenToWakeTheReader) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  UniqueFd pipe_read(pipe_fds[0]);
  UniqueFd pipe_write(pipe_fds[1]);
  EXPECT_STREQ(check_wake_fd(pipe_write.get()), "not a socket");
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  EXPECT_STREQ(check_wake_fd(event.get()), "not a socket");
  int dgram[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dgram), 0);
  UniqueFd dgram_a(dgram[0]), dgram_b(dgram[1]);
  EXPECT_STREQ(check_wake_fd(dgram_a.get()), "not a Unix stream socket");
  UniqueFd lone(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_STREQ(check_wake_fd(lone.get()), "a socket with no peer");
  // Connected to a named socket (the journal's, the broker's own): the publisher's wake-ups
  // would go there.
  const std::string path = "/tmp/ubroker-lane-test-" + std::to_string(::getpid()) + ".sock";
  UniqueFd named(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX, .sun_path = {}};
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(named.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(named.get(), 1), 0);
  ASSERT_EQ(::connect(lone.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::unlink(path.c_str());
  EXPECT_STREQ(check_wake_fd(lone.get()), "a socket connected to a named one, not one of a pair");
  auto w = LaneWriter::create(4096);
  auto r = LaneReader::create();
  ASSERT_TRUE(w && r);
  EXPECT_FALSE(w->attach(r->ack_fd(), std::move(pipe_write)));
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd mine(pair[0]), theirs(pair[1]);
  EXPECT_EQ(check_wake_fd(theirs.get()), nullptr);
  // A subscriber that left its end blocking and let it fill up: the publisher's wake-ups
  // still return at once.
  ASSERT_TRUE(w->attach(r->ack_fd(), std::move(theirs)));
  ASSERT_TRUE(r->attach(w->data_fd(), 4096));
  for (int i = 0; i < 20000; ++i) {  // the socket fills after a few hundred
    ASSERT_TRUE(r->arm());
    ASSERT_EQ(w->try_push(bytes_of("x")).value(), LaneWriter::Push::kWritten);
    r->disarm();
    ASSERT_EQ(next_text(*r), "x");
  }
}

TEST(Lane, FencesAreRecordsOfTheirOwnAndAnArmedReaderIsWokenThroughItsWakeSocket) {
  auto w = LaneWriter::create(4096);
  auto r = LaneReader::create();
  ASSERT_TRUE(w && r);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd wake(pair[0]);
  ASSERT_TRUE(w->attach(r->ack_fd(), UniqueFd(pair[1])));
  ASSERT_TRUE(r->attach(w->data_fd(), 4096));
  auto readable = [&] {
    pollfd p{.fd = wake.get(), .events = POLLIN, .revents = 0};
    return ::poll(&p, 1, 0) == 1;
  };
  ASSERT_EQ(w->try_push(bytes_of("before")).value(), LaneWriter::Push::kWritten);
  EXPECT_FALSE(readable()) << "a reader that is not armed is not woken";
  EXPECT_FALSE(r->arm()) << "arming with a message there says read instead";
  r->disarm();
  EXPECT_EQ(next_text(*r), "before");
  EXPECT_TRUE(r->arm());
  ASSERT_EQ(w->try_push_fence(7).value(), LaneWriter::Push::kWritten);
  EXPECT_TRUE(readable());
  r->disarm();
  auto f = r->peek();
  ASSERT_TRUE(f && *f);
  EXPECT_EQ(r->peeked_kind(), kLaneFence);
  std::uint64_t number = 0;
  std::memcpy(&number, (*f)->data(), sizeof number);
  EXPECT_EQ(number, 7u);
  r->consume();
  ASSERT_EQ(w->try_push(bytes_of("after")).value(), LaneWriter::Push::kWritten);
  EXPECT_EQ(next_text(*r), "after");
  EXPECT_EQ(r->peeked_kind(), kLaneMessage);
  EXPECT_EQ(r->delivered(), 2u) << "fences are not messages";
}

TEST(Lane, MessagesArriveInOrderAroundTheEndOfTheRing) {
  auto [w, r] = make_pair(4096);
  for (const std::string s : {"a", "", "hello lane"}) ASSERT_EQ(w.try_push(bytes_of(s)).value(), LaneWriter::Push::kWritten);
  EXPECT_EQ(next_text(r), "a");
  EXPECT_EQ(next_text(r), "");
  EXPECT_EQ(next_text(r), "hello lane");
  EXPECT_FALSE(r.peek().value().has_value());
  // 300 messages of odd sizes go round the 4 KiB ring many times (padding records at its end).
  for (int i = 0; i < 300; ++i) {
    const std::string s(static_cast<std::size_t>(1 + (i * 37) % 900), static_cast<char>('a' + i % 26));
    ASSERT_EQ(w.try_push(bytes_of(s)).value(), LaneWriter::Push::kWritten) << i;
    ASSERT_EQ(next_text(r), s) << i;
  }
  EXPECT_EQ(w.violation(), nullptr);
  EXPECT_EQ(r.violation(), nullptr);
}

TEST(Lane, AFullLaneSaysSoAndAConsumeWakesAWaitingWriter) {
  auto [w, r] = make_pair(4096);
  const std::string block(1000, 'x');
  int written = 0;
  while (w.try_push(bytes_of(block)).value() == LaneWriter::Push::kWritten) ++written;
  EXPECT_EQ(written, 4);  // 4 x 1008 bytes fit in 4096
  EXPECT_EQ(w.try_push(bytes_of(std::string(4000, 'y'))).error(), std::errc::message_size);
  std::thread reader([&] { EXPECT_EQ(next_text(r), block); });
  EXPECT_TRUE(w.wait_for_room(std::chrono::seconds(10)).value());
  reader.join();
  EXPECT_EQ(w.try_push(bytes_of(block)).value(), LaneWriter::Push::kWritten);
  // Nobody consumes: the wait ends at its deadline.
  EXPECT_EQ(w.try_push(bytes_of(block)).value(), LaneWriter::Push::kFull);
  EXPECT_FALSE(w.wait_for_room(milliseconds(20)).value());
}

TEST(Lane, TwoThreadsCarryAMillionNumbersInOrderWithWakeUps) {
  auto [w, r] = make_pair(16384);
  constexpr std::uint64_t kCount = 1000000;
  std::thread writer([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      const auto payload = std::as_bytes(std::span(&i, 1));
      for (;;) {
        auto p = w.try_push(payload);
        ASSERT_TRUE(p.has_value());
        if (*p == LaneWriter::Push::kWritten) break;
        ASSERT_TRUE(w.wait_for_room(std::chrono::seconds(10)).has_value());
      }
    }
  });
  std::uint64_t expected = 0;
  while (expected < kCount) {
    auto m = r.peek();
    ASSERT_TRUE(m.has_value());
    if (!*m) {
      ASSERT_TRUE(r.wait_for_message(std::chrono::seconds(10)).has_value());
      continue;
    }
    std::uint64_t got = 0;
    ASSERT_EQ((*m)->size(), sizeof got);
    std::memcpy(&got, (*m)->data(), sizeof got);
    ASSERT_EQ(got, expected);
    r.consume();
    ++expected;
  }
  writer.join();
}

TEST(Lane, NeitherSideCanWriteWhatTheOtherReads) {
  auto [w, r] = make_pair(4096);
  // The subscriber gets the data fd; the publisher gets the ack fd: both refuse a writable map.
  EXPECT_EQ(Mapping::map(w.data_fd(), kLaneHeaderBytes + 4096, Access::kReadWrite).error(), std::errc::operation_not_permitted);
  EXPECT_EQ(Mapping::map(r.ack_fd(), kLaneAckBytes, Access::kReadWrite).error(), std::errc::operation_not_permitted);
  // And a lane fd must be what it claims.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  EXPECT_STREQ(check_lane_fd(pipe_fds[0], kLaneAckBytes), "not a memfd");
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  auto unsealed = Memfd::create("plain", kLaneAckBytes);
  ASSERT_TRUE(unsealed);
  EXPECT_STREQ(check_lane_fd(unsealed->fd(), kLaneAckBytes), "not sealed against shrink, grow and new writable mappings");
  EXPECT_STREQ(check_lane_fd(r.ack_fd(), 2 * kLaneAckBytes), "not the size agreed");
}

TEST(Lane, AReaderInAnotherProcessGetsEveryMessage) {
  auto [w, r] = make_pair(8192);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (std::uint64_t i = 0; i < 10000; ++i) {
      for (;;) {
        auto m = r.peek();
        if (!m) ::_exit(2);
        if (*m) break;
        if (!r.wait_for_message(std::chrono::seconds(10))) ::_exit(3);
      }
      std::uint64_t got = 0;
      std::memcpy(&got, (*r.peek())->data(), sizeof got);
      if (got != i) ::_exit(4);
      r.consume();
    }
    ::_exit(0);
  }
  for (std::uint64_t i = 0; i < 10000; ++i) {
    while (w.try_push(std::as_bytes(std::span(&i, 1))).value() == LaneWriter::Push::kFull) {
      ASSERT_TRUE(w.wait_for_room(std::chrono::seconds(10)).has_value());
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A hostile publisher: its data segment, written by hand.
struct ForgedData {
  Memfd fd;
  Mapping map;
  LaneHeader& header() { return *reinterpret_cast<LaneHeader*>(map.data()); }
  std::byte* ring() { return map.data() + kLaneHeaderBytes; }
  void record(std::uint64_t at, std::uint32_t length, std::uint32_t kind) {
    const LaneRecord r{.length = length, .kind = kind};
    std::memcpy(ring() + at, &r, sizeof r);
  }
};
ForgedData forge_data(std::uint64_t capacity) {
  auto fd = Memfd::create("forged", kLaneHeaderBytes + capacity);
  EXPECT_TRUE(fd);
  auto map = Mapping::map(fd->fd(), fd->size(), Access::kReadWrite);
  EXPECT_TRUE(map);
  EXPECT_TRUE(add_seals(fd->fd(), F_SEAL_FUTURE_WRITE));
  return {std::move(*fd), std::move(*map)};
}

TEST(Lane, AReaderRefusesEveryFieldAPublisherCanCorrupt) {
  struct Case {
    std::uint64_t write_pos;
    std::uint32_t length, kind;
    const char* says;
  };
  const Case cases[] = {
      {4096 + 8, 8, kLaneMessage, "write position more than the ring ahead"},
      {12, 4, kLaneMessage, "write position not at a record"},
      {16, 4, 7, "a record of unknown kind"},
      {16, 64, kLaneMessage, "a record longer than what was written"},
      {4096, 5000, kLaneMessage, "a record that wraps around the end of the ring"},
      {16, 8, kLanePadding, "padding that does not reach the end of the ring"},
  };
  for (const Case& c : cases) {
    ForgedData d = forge_data(4096);
    d.record(0, c.length, c.kind);
    d.header().write_pos.store(c.write_pos);
    auto r = LaneReader::create();
    ASSERT_TRUE(r);
    ASSERT_TRUE(r->attach(d.fd.fd(), 4096));
    auto m = r->peek();
    ASSERT_FALSE(m.has_value()) << c.says;
    EXPECT_EQ(m.error(), std::errc::protocol_error);
    EXPECT_STREQ(r->violation(), c.says);
    EXPECT_FALSE(r->peek().has_value()) << "a violation is final";
  }
  // A write position that goes back after a message was read.
  ForgedData d = forge_data(4096);
  d.record(0, 8, kLaneMessage);
  d.header().write_pos.store(16);
  auto r = LaneReader::create();
  ASSERT_TRUE(r && r->attach(d.fd.fd(), 4096));
  ASSERT_TRUE(r->peek().value().has_value());
  r->consume();
  d.header().write_pos.store(8);
  ASSERT_FALSE(r->peek().has_value());
  EXPECT_STREQ(r->violation(), "write position behind the read position");
}

// The writer reads the subscriber's position only when the one it read last leaves too little
// room: each corruption is found there, at the latest when the ring looks full.
TEST(Lane, AWriterRefusesAReadPositionASubscriberCorrupted) {
  struct Forged {
    Result<LaneWriter> w = LaneWriter::create(4096);
    Result<Memfd> ack = Memfd::create("forged-ack", kLaneAckBytes);
    std::optional<Mapping> map;
    [[nodiscard]] bool ready() {
      if (!w || !ack) return false;
      auto m = Mapping::map(ack->fd(), kLaneAckBytes, Access::kReadWrite);
      if (!m) return false;
      map = std::move(*m);
      return add_seals(ack->fd(), F_SEAL_FUTURE_WRITE) && w->attach(ack->fd());
    }
    [[nodiscard]] LaneAck& a() { return *reinterpret_cast<LaneAck*>(map->data()); }
    // Pushes until the writer stops: full (true) or a violation (false); at most a ring's worth.
    [[nodiscard]] bool fill() {
      for (int i = 0; i < 4096 / 16 + 1; ++i) {
        auto p = w->try_push(bytes_of("0123456789"));
        if (!p) return false;
        if (*p == LaneWriter::Push::kFull) return true;
      }
      ADD_FAILURE() << "a 4096-byte ring never filled";
      return true;
    }
  };
  for (const auto& [read_pos, says] : {std::pair<std::uint64_t, const char*>{1u << 20, "read position past the write position"},
                                       {3, "read position not at a record"}}) {
    Forged f;
    ASSERT_TRUE(f.ready());
    ASSERT_EQ(f.w->try_push(bytes_of("0123456789")).value(), LaneWriter::Push::kWritten);
    f.a().read_pos.store(read_pos);
    EXPECT_FALSE(f.fill());
    EXPECT_STREQ(f.w->violation(), says);
    EXPECT_EQ(f.w->try_push(bytes_of("x")).error(), std::errc::protocol_error);  // for good
  }
  // A read position that goes back.
  Forged f;
  ASSERT_TRUE(f.ready());
  ASSERT_TRUE(f.fill());
  f.a().read_pos.store(2048);
  ASSERT_EQ(f.w->try_push(bytes_of("def")).value(), LaneWriter::Push::kWritten);  // room again
  ASSERT_TRUE(f.fill());
  f.a().read_pos.store(8);
  EXPECT_FALSE(f.fill());
  EXPECT_STREQ(f.w->violation(), "read position went back");
}

}  // namespace
}  // namespace ubroker::shm

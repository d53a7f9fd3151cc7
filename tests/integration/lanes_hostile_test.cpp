// Hostile ends of a direct lane, between real processes. This process is one end, a test
// peer the other; this process's client writes its own segment through the only writable
// mapping of it, and the test scribbles on that mapping as a hostile client would. Each field
// of the publisher's data segment (header, records, the message inside) and of the
// subscriber's ack segment is corrupted in turn: the other end reports the violation, the
// broker closes the lane and logs why, nobody crashes or hangs, the pair's messages go on
// through the broker, and the books balance. Fields nobody trusts (informational ones, wake-up
// words) are corrupted too: the lane carries on. And the setup: every check of what a
// subscriber hands over (its segment, its wake socket), and setup frames out of turn.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <span>
#include <sstream>
#include <string>

#include "broker_process.hpp"
#include "raw_connection.hpp"
#include "test_util.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/shm/lane_layout.hpp"
#include "ubroker/shm/memfd.hpp"

namespace ubroker::test {
namespace {

using namespace std::chrono_literals;
using shm::LaneAck;
using shm::LaneHeader;
using shm::LaneRecord;

constexpr std::uint64_t kCapacity = 262144;
// The smallest lanes default clients take (ubroker.toml(5)), and a slow-consumer limit no
// stopped peer reaches within a test.
// A short queue for each subscriber: a lane's offer reaches its subscriber behind what the
// broker queued for it, so with the default (16384 messages) a whole test's stream could be
// queued ahead of it and the lane set up only once the publisher is done.
const std::string kConfig =
    "[lanes]\nenabled = true\ncapacity_bytes = 262144\n[limits]\nqueue_max_messages = 256\n"
    "[timeouts]\nslow_consumer_ms = 60000\n";

// The shared mapping of the memfd `name` in this process, with the permissions `perms`
// ("rw-s": the segment this process's client writes; "r--s": the other end's).
std::span<std::byte> mapping_of(const std::string& name, const std::string& perms) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::span<std::byte> found;
  int count = 0;
  std::string memfds;  // for the failure message
  while (std::getline(maps, line)) {
    if (line.find("/memfd:") != std::string::npos) memfds += line + "\n";
    std::istringstream in(line);
    std::string range, p, offset, dev, inode, path;
    in >> range >> p >> offset >> dev >> inode >> path;
    if (p != perms || path != "/memfd:" + name) continue;
    const auto dash = range.find('-');
    const std::uintptr_t from = std::stoull(range.substr(0, dash), nullptr, 16);
    const std::uintptr_t to = std::stoull(range.substr(dash + 1), nullptr, 16);
    found = {reinterpret_cast<std::byte*>(from), to - from};
    ++count;
  }
  EXPECT_EQ(count, 1) << "mappings of memfd:" << name << " " << perms << " among\n" << memfds;
  return found;
}

LaneHeader& header_of(std::span<std::byte> data) { return *reinterpret_cast<LaneHeader*>(data.data()); }
LaneAck& ack_of(std::span<std::byte> ack) { return *reinterpret_cast<LaneAck*>(ack.data()); }
std::byte* ring_at(std::span<std::byte> data, std::uint64_t pos) {
  return data.data() + shm::kLaneHeaderBytes + pos % kCapacity;
}
LaneRecord& record_at(std::span<std::byte> data, std::uint64_t pos) {
  return *reinterpret_cast<LaneRecord*>(ring_at(data, pos));
}

// Whether `pid` is stopped (SIGSTOP takes effect asynchronously).
bool stopped(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  stat >> pid_field >> comm >> state;  // (the test peer's comm has no spaces)
  return state == "T";
}

void futex_wake_all(std::atomic<std::uint32_t>& word) {
  word.fetch_add(1);
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

std::string numbered(std::uint64_t n) {
  std::string p(16, 'x');
  std::memcpy(p.data(), &n, sizeof n);
  return p;
}
std::uint64_t number_of(std::span<const std::byte> p) {
  std::uint64_t n = ~0ull;
  if (p.size() >= sizeof n) std::memcpy(&n, p.data(), sizeof n);
  return n;
}

void expect_books_balance(const wire::BrokerStatus& st) {
  EXPECT_EQ(st.lane_accepted(), st.lane_delivered() + st.lane_dropped() + st.lane_lost() + st.lane_queued())
      << st.ShortDebugString();
}

struct Corruption {
  std::string name;
  // The violation the other end reports, or "" when the field is trusted for nothing.
  std::string reason;
  // Applied to this process's writable segment; `other` is the other end's segment.
  std::function<void(std::span<std::byte> mine, std::span<std::byte> other)> apply;
};
std::string name_of(const testing::TestParamInfo<Corruption>& info) { return info.param.name; }

// ---- a hostile publisher ------------------------------------------------------------------

// The first unread record: where the subscriber (the other end) will read next.
std::uint64_t next_read(std::span<std::byte> ack) { return ack_of(ack).read_pos.load(); }

// The topic of the first unread message record, in the ring.
char* topic_at(std::span<std::byte> data, std::uint64_t pos) {
  return reinterpret_cast<char*>(ring_at(data, pos) + sizeof(LaneRecord) + 8);
}

// Ten messages (bulk payloads, with `bulk`) wait in the lane of a stopped subscriber; this
// process corrupts them (or the header) and lets the subscriber go on.
void corrupt_a_stopped_subscribers_lane(const Corruption& c, bool bulk) {
  BrokerProcess broker(kConfig);
  Process peer = Process::spawn({UBROKER_TEST_PEER, "subscribe", broker.socket(), "hostile.t", "1000000000"});
  ASSERT_TRUE(wait_for_output(peer, "ready"));
  Client pub = broker.connect("hostile-pub");
  std::uint64_t seq = 0;
  ASSERT_TRUE(eventually([&] {  // the first publishes set the lane up
    EXPECT_TRUE(pub.publish("hostile.t", numbered(seq++)).has_value());
    return broker_status(pub).lane_delivered() > 0;
  })) << broker_status(pub).ShortDebugString();
  ASSERT_TRUE(eventually([&] { return broker_status(pub).lane_queued() == 0; }));
  peer.signal(SIGSTOP);
  ASSERT_TRUE(eventually([&] { return stopped(peer.pid()); }));
  for (int i = 0; i < 10; ++i) {
    if (!bulk) {
      ASSERT_TRUE(pub.publish("hostile.t", numbered(seq++)).has_value());
      continue;
    }
    auto loan = pub.loan("hostile.t", 4096);
    ASSERT_TRUE(loan.has_value());
    const std::string n = numbered(seq++);
    std::memcpy(loan->data().data(), n.data(), n.size());
    ASSERT_TRUE(pub.publish(std::move(*loan)).has_value());
  }
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] { return broker_status(pub).lane_queued() == 10; }));
  const auto before = broker_status(pub);

  c.apply(mapping_of("ubroker-lane", "rw-s"), mapping_of("ubroker-lane-ack", "r--s"));
  peer.signal(SIGCONT);

  if (c.reason.empty()) {  // nothing to report: the ten are read
    ASSERT_TRUE(eventually([&] { return broker_status(pub).lane_delivered() == before.lane_delivered() + 10; }))
        << broker_status(pub).ShortDebugString();
    const auto st = broker_status(pub);
    EXPECT_EQ(st.lanes_broken(), 0u);
    EXPECT_EQ(st.lanes_open(), 1u);
    expect_books_balance(st);
    EXPECT_FALSE(peer.wait(0ms).has_value()) << peer.err();
    return;
  }
  const std::string logged = "closed: the subscriber reported a violation: " + c.reason;
  ASSERT_TRUE(eventually([&] { return broker.process().err().find(logged) != std::string::npos; }, 10s))
      << "expected '" << logged << "' in\n" << broker.process().err();
  // Closed, and its books final once the subscriber said it is done with it.
  ASSERT_TRUE(eventually([&] {
    const auto st = broker_status(pub);
    return st.lanes_open() == 0 && st.lane_queued() == 0;
  }));
  const auto closed = broker_status(pub);
  EXPECT_EQ(closed.lanes_broken(), 1u);
  EXPECT_EQ(closed.lane_queued(), 0u);
  EXPECT_GE(closed.lane_lost(), 1u) << "what the lane held from the bad record on";
  expect_books_balance(closed);
  // The pair stays on the broker's path: the next publishes are delivered by it.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(pub.publish("hostile.t", numbered(seq++)).has_value());
  ASSERT_TRUE(pub.flush().has_value());
  ASSERT_TRUE(eventually([&] { return broker_status(pub).deliveries_written() >= closed.deliveries_written() + 100; }));
  const auto after = broker_status(pub);
  EXPECT_EQ(after.lane_accepted(), closed.lane_accepted());
  EXPECT_EQ(after.lanes_opened(), closed.lanes_opened()) << "no new lane for a pair whose lane broke";
  EXPECT_FALSE(peer.wait(0ms).has_value()) << "the subscriber died: " << peer.err();
}

class HostilePublisher : public testing::TestWithParam<Corruption> {};

TEST_P(HostilePublisher, TheSubscriberReportsItTheBrokerClosesTheLaneAndTheBrokerCarriesThePair) {
  corrupt_a_stopped_subscribers_lane(GetParam(), false);
}

INSTANTIATE_TEST_SUITE_P(
    EveryField, HostilePublisher,
    testing::Values(
        Corruption{"WritePositionMoreThanTheRingAhead", "write position more than the ring ahead",
                   [](auto data, auto ack) { header_of(data).write_pos = next_read(ack) + kCapacity + 8; }},
        Corruption{"WritePositionBehindTheReader", "write position behind the read position",
                   [](auto data, auto ack) { header_of(data).write_pos = next_read(ack) - 8; }},
        Corruption{"WritePositionNotAtARecord", "write position not at a record",
                   [](auto data, auto) { header_of(data).write_pos += 4; }},
        Corruption{"RecordOfUnknownKind", "a record of unknown kind",
                   [](auto data, auto ack) { record_at(data, next_read(ack)).kind = 77; }},
        Corruption{"RecordPastTheEndOfTheRing", "a record that wraps around the end of the ring",
                   [](auto data, auto ack) { record_at(data, next_read(ack)).length = 3 * kCapacity; }},
        Corruption{"FenceOfTheWrongSize", "a fence record that is not 8 bytes",
                   [](auto data, auto ack) {
                     record_at(data, next_read(ack)).kind = shm::kLaneFence;
                     record_at(data, next_read(ack)).length = 4;
                   }},
        Corruption{"PaddingThatStopsShort", "padding that does not reach the end of the ring",
                   [](auto data, auto ack) {
                     record_at(data, next_read(ack)).kind = shm::kLanePadding;
                     record_at(data, next_read(ack)).length = 0;
                   }},
        Corruption{"MessageLengthsPastItsEnd", "a lane message whose lengths pass its end",
                   [](auto data, auto ack) {
                     const std::uint32_t huge = 0xfffffff0;
                     std::memcpy(ring_at(data, next_read(ack)) + sizeof(LaneRecord), &huge, sizeof huge);
                   }},
        Corruption{"InvalidTopic", "a lane message with an invalid topic",
                   [](auto data, auto ack) { topic_at(data, next_read(ack))[8] = '*'; }},
        Corruption{"TopicTheBrokerDidNotRouteHere", "a message on a topic the broker did not route on this lane",
                   [](auto data, auto ack) { topic_at(data, next_read(ack))[8] = 'u'; }},
        Corruption{"InformationalAndWakeUpFields", "",
                   [](auto data, auto) {
                     LaneHeader& h = header_of(data);
                     h.magic = 0;
                     h.capacity = 12345;
                     h.write_seq = 0xdeadbeef;
                     h.writer_waiting = 7;
                   }}),
    name_of);

// The first bulk record the subscriber has not read (the segment's fence comes before it) and
// its reference.
std::uint64_t first_bulk(std::span<std::byte> data, std::span<std::byte> ack) {
  std::uint64_t pos = next_read(ack);
  while (record_at(data, pos).kind != shm::kLaneBulk) pos += shm::lane_record_bytes(record_at(data, pos).length);
  return pos;
}
shm::LaneBulkRef& bulk_ref_at(std::span<std::byte> data, std::uint64_t pos) {
  return *reinterpret_cast<shm::LaneBulkRef*>(ring_at(data, pos) + sizeof(LaneRecord));
}

class HostileBulkPublisher : public testing::TestWithParam<Corruption> {};

TEST_P(HostileBulkPublisher, TheSubscriberReportsItTheBrokerClosesTheLaneAndTheBrokerCarriesThePair) {
  corrupt_a_stopped_subscribers_lane(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(
    EveryField, HostileBulkPublisher,
    testing::Values(
        Corruption{"ShorterThanItsReference", "a bulk record shorter than its reference",
                   [](auto data, auto ack) { record_at(data, first_bulk(data, ack)).length = 16; }},
        Corruption{"ASegmentNotPassed", "a bulk record naming a segment the broker did not pass",
                   [](auto data, auto ack) { bulk_ref_at(data, first_bulk(data, ack)).segment = 77; }},
        Corruption{"AHoldSlotOutOfRange", "a bulk record with a hold slot out of range",
                   [](auto data, auto ack) { bulk_ref_at(data, first_bulk(data, ack)).slot = shm::kLaneHoldSlots; }},
        Corruption{"AnOffsetPastTheSegment", "a bulk reference outside the segment the broker passed",
                   [](auto data, auto ack) { bulk_ref_at(data, first_bulk(data, ack)).offset = std::uint64_t{1} << 40; }},
        Corruption{"AnOffsetNotAtARecord", "a bulk reference outside the segment the broker passed",
                   [](auto data, auto ack) { bulk_ref_at(data, first_bulk(data, ack)).offset += 8; }},
        Corruption{"ALengthPastTheSegment", "a bulk reference outside the segment the broker passed",
                   [](auto data, auto ack) { bulk_ref_at(data, first_bulk(data, ack)).length = std::uint64_t{1} << 40; }},
        Corruption{"APayloadOfItsOwn", "a bulk record with a payload of its own",
                   [](auto data, auto ack) { record_at(data, first_bulk(data, ack)).length += 8; }}),
    name_of);

// ---- a hostile subscriber -----------------------------------------------------------------

class HostileSubscriber : public testing::TestWithParam<Corruption> {};

// A publisher peer fills the lane of this process's subscriber, which has stopped reading (its
// receive queue is full); this process corrupts its ack segment and wakes the publisher.
// (Records are 48 bytes: a record head, the message's two lengths, "hostile.t", 16 bytes.)
TEST_P(HostileSubscriber, ThePublisherReportsItTheBrokerClosesTheLaneAndEveryMessageIsReceivedOrCountedLost) {
  const Corruption& c = GetParam();
  BrokerProcess broker(kConfig);
  auto sub = Client::connect({.address = broker.socket(), .name = "hostile-sub", .receive_queue = 16,
                              .reconnect = {.enabled = false}});
  ASSERT_TRUE(sub.has_value());
  auto s = sub->subscribe("hostile.t");
  ASSERT_TRUE(s.has_value());
  Client observer = broker.connect("observer");  // the subscriber's own answers wait behind its full queue
  // Enough that the lane fills after it was set up: what the publisher's client, the sockets
  // and the broker held for this subscriber before the lane's first fence, then a ring's
  // worth (5461 records) in the lane.
  constexpr std::uint64_t kCount = 100000;
  Process peer = publish_from_peer(broker, "hostile.t", kCount, 16);
  std::vector<std::uint64_t> got;
  auto receive_one = [&](std::chrono::milliseconds timeout) {
    auto m = sub->receive(timeout);
    if (m) got.push_back(number_of(m->payload()));
    return m.has_value();
  };
  // Received until the lane carries messages here; then this subscriber stops reading: its
  // queue fills, it stops reading the lane, and the publisher waits for room in a full lane.
  while (broker_status(observer).lane_delivered() == 0) {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(receive_one(5s)) << "after " << got.size() << ", the lane never carried: "
                                                           << broker_status(observer).ShortDebugString();
  }
  // Full after the publisher saw where this subscriber stopped: a ring's worth of 48-byte
  // records is queued beyond what it read (the publisher reads the read position only when
  // it runs out of room, and this subscriber makes it visible when it stops).
  ASSERT_TRUE(eventually([&] {
    const auto st = broker_status(observer);
    return st.lanes_open() == 1 && st.lane_delivered() > 0 && st.lane_queued() >= kCapacity / 48 - 1;
  })) << broker_status(observer).ShortDebugString();

  std::span<std::byte> ack = mapping_of("ubroker-lane-ack", "rw-s");
  c.apply(ack, mapping_of("ubroker-lane", "r--s"));
  futex_wake_all(ack_of(ack).read_seq);
  const std::string logged = "closed: the publisher reported a violation: " + c.reason;
  if (!c.reason.empty()) {  // before this subscriber reads again, and puts its own position back
    ASSERT_TRUE(eventually([&] { return broker.process().err().find(logged) != std::string::npos; }, 10s))
        << "expected '" << logged << "' in\n" << broker.process().err();
  }

  // Everything that comes, until the publisher is done and nothing more does.
  std::optional<int> status;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (got.size() < kCount && std::chrono::steady_clock::now() < give_up) {
    if (!status) status = peer.wait(0ms);
    if (!receive_one(status ? 500ms : 5s) && status) break;
  }
  ASSERT_TRUE(status.has_value()) << "the publisher hangs";
  EXPECT_EQ(exit_code(*status), 0) << peer.err();
  for (std::size_t i = 1; i < got.size(); ++i) ASSERT_LT(got[i - 1], got[i]) << "out of order at " << i;
  ASSERT_TRUE(eventually([&] { return broker_status(observer).lane_queued() == 0; }))
      << broker_status(observer).ShortDebugString();
  const auto st = broker_status(observer);
  expect_books_balance(st);
  if (c.reason.empty()) {
    EXPECT_EQ(got.size(), kCount);
    EXPECT_EQ(st.lanes_broken(), 0u);
    return;
  }
  EXPECT_EQ(st.lanes_broken(), 1u);
  EXPECT_EQ(got.size() + st.lane_lost(), kCount) << "each message received or counted lost";
}

LaneHeader& other_header(std::span<std::byte> data) { return header_of(data); }

INSTANTIATE_TEST_SUITE_P(
    EveryField, HostileSubscriber,
    testing::Values(
        Corruption{"ReadPositionPastTheWritePosition", "read position past the write position",
                   [](auto ack, auto data) { ack_of(ack).read_pos = other_header(data).write_pos.load() + 64; }},
        Corruption{"ReadPositionWentBack", "read position went back", [](auto ack, auto) { ack_of(ack).read_pos = 0; }},
        Corruption{"ReadPositionNotAtARecord", "read position not at a record",
                   [](auto ack, auto) { ack_of(ack).read_pos += 4; }},
        Corruption{"WakeUpWordsAndDeliveredCount", "",
                   [](auto ack, auto) {
                     ack_of(ack).read_seq = 0xdeadbeef;
                     ack_of(ack).reader_waiting = 9;
                     ack_of(ack).delivered = 3;
                   }}),
    name_of);

// ---- a hostile subscriber's setup frames ----------------------------------------------------

// A raw client that says it speaks lanes and subscribes; a library client publishes to it, so
// the broker offers the two a lane. The raw client answers the offer with what `segment`
// gives: the broker refuses it with the reason, closes the lane, and carries the pair.
struct BadSegment {
  std::string name;
  std::string reason;  // as the broker logs it
  std::function<std::vector<shm::UniqueFd>()> fds;
};
std::string bad_segment_name(const testing::TestParamInfo<BadSegment>& info) { return info.param.name; }

shm::UniqueFd sealed_memfd(std::uint64_t size, bool future_write = true) {
  auto m = shm::Memfd::create("hostile-ack", size);
  EXPECT_TRUE(m.has_value());
  if (future_write) {
    EXPECT_TRUE(shm::add_seals(m->fd(), F_SEAL_FUTURE_WRITE).has_value());
  }
  return shm::UniqueFd(::fcntl(m->fd(), F_DUPFD_CLOEXEC, 0));
}
shm::UniqueFd end_of_pair(int type) {
  int pair[2];
  EXPECT_EQ(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, pair), 0);
  ::close(pair[0]);  // the peer end may go: only the kind is checked
  return shm::UniqueFd(pair[1]);
}

class HostileSetup : public testing::TestWithParam<BadSegment> {};

TEST_P(HostileSetup, ARefusedSegmentClosesTheLaneWithItsReasonAndTheBrokerCarriesThePair) {
  const BadSegment& c = GetParam();
  BrokerProcess broker(kConfig);
  RawConnection raw(broker.socket());
  raw.hello("raw-lanes", {shm::kLaneFeature});
  raw.subscribe(1, "setup.t");
  Client pub = broker.connect("pub");
  ASSERT_TRUE(pub.publish("setup.t", numbered(0)).has_value());
  std::optional<wire::Header> offer;
  for (int i = 0; i < 10 && !offer; ++i) {
    auto f = raw.read_frame();
    ASSERT_TRUE(f.has_value()) << "no LANE_OFFER";
    if (f->type() == wire::LANE_OFFER) offer = *f;
  }
  ASSERT_TRUE(offer.has_value());
  EXPECT_FALSE(offer->lane().publisher());
  std::vector<shm::UniqueFd> fds = c.fds();
  std::vector<int> raw_fds;
  for (const auto& f : fds) raw_fds.push_back(f.get());
  wire::Header segment;
  segment.set_type(wire::LANE_SEGMENT);
  segment.mutable_lane()->set_id(offer->lane().id());
  segment.set_fd_count(static_cast<std::uint32_t>(raw_fds.size()));
  ASSERT_TRUE(raw.send_frame_with_fds(segment, raw_fds));

  const std::string logged = "closed: the subscriber's segment was refused: " + c.reason;
  ASSERT_TRUE(eventually([&] { return broker.process().err().find(logged) != std::string::npos; }, 10s))
      << "expected '" << logged << "' in\n" << broker.process().err();
  // The raw client hears of it, stays connected, and gets the next publish from the broker.
  ASSERT_TRUE(pub.publish("setup.t", numbered(1)).has_value());
  bool closed = false, delivered = false;
  for (int i = 0; i < 10 && !(closed && delivered); ++i) {
    std::string payload;
    auto f = raw.read_frame(5s, &payload);
    ASSERT_TRUE(f.has_value()) << "disconnected or silent";
    closed |= f->type() == wire::LANE_CLOSE && f->lane().broken();
    delivered |= f->type() == wire::DELIVER && number_of(std::as_bytes(std::span(payload))) == 1;
  }
  EXPECT_TRUE(closed && delivered);
  const auto st = broker_status(pub);
  EXPECT_EQ(st.lanes_broken(), 1u);
  EXPECT_EQ(st.lanes_opened(), 0u);
  EXPECT_EQ(st.lane_fds(), 0u) << "the refused fds are not kept";
}

INSTANTIATE_TEST_SUITE_P(
    EveryCheck, HostileSetup,
    testing::Values(
        BadSegment{"APipeForTheAckSegment", "not a memfd",
                   [] {
                     int p[2];
                     EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
                     ::close(p[0]);
                     std::vector<shm::UniqueFd> v;
                     v.emplace_back(p[1]);
                     v.push_back(end_of_pair(SOCK_STREAM));
                     return v;
                   }},
        BadSegment{"AnAckSegmentOfTheWrongSize", "not the size agreed",
                   [] {
                     std::vector<shm::UniqueFd> v;
                     v.push_back(sealed_memfd(2 * shm::kLaneAckBytes));
                     v.push_back(end_of_pair(SOCK_STREAM));
                     return v;
                   }},
        BadSegment{"AnAckSegmentStillOpenToWritableMappings", "not sealed against shrink, grow and new writable mappings",
                   [] {
                     std::vector<shm::UniqueFd> v;
                     v.push_back(sealed_memfd(shm::kLaneAckBytes, false));
                     v.push_back(end_of_pair(SOCK_STREAM));
                     return v;
                   }},
        BadSegment{"NoWakeSocket", "the subscriber's segment comes with a wake socket",
                   [] {
                     std::vector<shm::UniqueFd> v;
                     v.push_back(sealed_memfd(shm::kLaneAckBytes));
                     return v;
                   }},
        BadSegment{"AnEventfdToWakeIt", "not a socket",
                   [] {
                     std::vector<shm::UniqueFd> v;
                     v.push_back(sealed_memfd(shm::kLaneAckBytes));
                     v.emplace_back(::eventfd(0, EFD_CLOEXEC));
                     return v;
                   }},
        BadSegment{"ADatagramSocketToWakeIt", "not a Unix stream socket",
                   [] {
                     std::vector<shm::UniqueFd> v;
                     v.push_back(sealed_memfd(shm::kLaneAckBytes));
                     v.push_back(end_of_pair(SOCK_DGRAM));
                     return v;
                   }}),
    bad_segment_name);

// Both ends raw, the lane set up as each end's client would answer it: the publisher then
// names what fences it likes in LANE_ROUTE_ACKs, and the subscriber reads nothing.
struct RawLane {
  RawConnection sub, pub;
  shm::UniqueFd wake_mine, wake_theirs, ack, data;
  std::uint64_t lane = 0;
  std::uint64_t version = 0;  // of the route that names it

  RawLane(const BrokerProcess& broker, wire::Overflow overflow) : sub(broker.socket()), pub(broker.socket()) {
    sub.hello("raw-sub", {shm::kLaneFeature});
    sub.subscribe(1, "fence.t", overflow);
    pub.hello("raw-pub", {shm::kLaneFeature});
    wire::Header publish;
    publish.set_type(wire::PUBLISH);
    publish.set_topic("fence.t");
    pub.send_frame(publish, "first");
    auto sub_offer = read_until(sub, wire::LANE_OFFER);
    if (!sub_offer) return;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return;
    wake_mine = shm::UniqueFd(pair[0]);
    wake_theirs = shm::UniqueFd(pair[1]);
    ack = sealed_memfd(shm::kLaneAckBytes);
    wire::Header segment;
    segment.set_type(wire::LANE_SEGMENT);
    segment.mutable_lane()->set_id(sub_offer->lane().id());
    segment.set_fd_count(2);
    const std::array<int, 2> sub_fds{ack.get(), wake_theirs.get()};
    if (!sub.send_frame_with_fds(segment, sub_fds)) return;
    auto pub_offer = read_until(pub, wire::LANE_OFFER);
    if (!pub_offer || !pub_offer->lane().publisher()) return;
    data = sealed_memfd(shm::kLaneHeaderBytes + pub_offer->lane().capacity());
    segment.set_fd_count(1);
    const int data_fd = data.get();
    if (!pub.send_frame_with_fds(segment, std::span(&data_fd, 1))) return;
    for (auto route = read_until(pub, wire::LANE_ROUTE); route; route = read_until(pub, wire::LANE_ROUTE)) {
      if (route->lane().targets_size() == 0) continue;  // the first route may come before the lane opened
      lane = route->lane().targets(0).lane();
      version = route->lane().version();
      return;
    }
  }
  static std::optional<wire::Header> read_until(RawConnection& raw, wire::FrameType type) {
    for (int i = 0; i < 20; ++i) {
      auto f = raw.read_frame();
      if (!f) return std::nullopt;
      if (f->type() == type) return f;
    }
    return std::nullopt;
  }
  // The route taken with fence 1 (version 0 after: fences only), naming the lane `times`
  // times.
  [[nodiscard]] std::vector<std::byte> ack_frame(std::uint64_t fence, int times = 1) const {
    wire::Header h;
    h.set_type(wire::LANE_ROUTE_ACK);
    h.set_topic("fence.t");
    h.mutable_lane()->set_version(fence == 1 ? version : 0);
    for (int i = 0; i < times; ++i) {
      auto* t = h.mutable_lane()->add_targets();
      t->set_lane(lane);
      t->set_fence(fence + static_cast<std::uint64_t>(i));
    }
    std::vector<std::byte> frame(proto::frame_head_size(h));
    proto::write_frame_head(frame.data(), h, 0);
    return frame;
  }
  // Sends fences 1, 2, ... until the broker stops reading this publisher (its socket stays
  // full for 3 s: true) or `count` were sent (false).
  [[nodiscard]] bool flood(std::uint64_t count) {
    EXPECT_EQ(::fcntl(pub.fd(), F_SETFL, ::fcntl(pub.fd(), F_GETFL) | O_NONBLOCK), 0);
    for (std::uint64_t fence = 1; fence <= count; ++fence) {
      const auto frame = ack_frame(fence);
      for (std::size_t off = 0; off < frame.size();) {
        const ssize_t n = ::send(pub.fd(), frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
          off += static_cast<std::size_t>(n);
          continue;
        }
        if (n < 0 && errno != EAGAIN) return false;  // closed by the broker
        pollfd p{.fd = pub.fd(), .events = POLLOUT, .revents = 0};
        if (::poll(&p, 1, 3000) == 0) return true;
      }
    }
    return false;
  }
};

// Each fence goes into the subscriber's queue only while it has room; then the publisher is
// held back (the broker stops reading it), and the queue stays within its limit instead of
// growing with every frame the publisher sends.
TEST(HostileFences, FencesNamedFasterThanALosslessSubscriberReadsHoldThePublisherBack) {
  BrokerProcess broker(kConfig);  // queue_max_messages = 256
  RawLane raw(broker, wire::BLOCK);
  ASSERT_NE(raw.lane, 0u) << "no lane was set up";
  const bool held_back = raw.flood(50000);
  Client observer = broker.connect("observer");
  const auto st = broker_status(observer);
  EXPECT_TRUE(held_back) << "all 50000 fences were relayed: " << st.ShortDebugString();
  ASSERT_EQ(st.uids_size(), 1);
  // 256 messages' room, plus the frames a route change may add beyond it: a few KiB, not the
  // megabytes 50,000 relayed fences would be.
  EXPECT_LT(st.uids(0).queued_bytes(), 64u * 1024) << st.ShortDebugString();
}

// A lane that carries only DROP subscriptions does not hold its publisher back for a fence:
// it ends, and the broker carries the pair, dropping as its rules say.
TEST(HostileFences, AFenceForADropSubscriberWithAFullQueueEndsTheLaneInstead) {
  BrokerProcess broker(kConfig);
  RawLane raw(broker, wire::DROP);
  ASSERT_NE(raw.lane, 0u) << "no lane was set up";
  EXPECT_FALSE(raw.flood(50000)) << "held back for a lossy subscriber";
  ASSERT_TRUE(eventually([&] {
    return broker.process().err().find("its subscriber's queue had no room for a fence") != std::string::npos;
  })) << broker.process().err();
  Client observer = broker.connect("observer");
  const auto st = broker_status(observer);
  EXPECT_EQ(st.lanes_open(), 0u);
  EXPECT_LT(st.uids(0).queued_bytes(), 64u * 1024) << st.ShortDebugString();
}

// An ACK that names a lane twice (to have each fence relayed) is a protocol error.
TEST(HostileFences, AnAckNamingALaneTwiceIsAProtocolError) {
  BrokerProcess broker(kConfig);
  RawLane raw(broker, wire::BLOCK);
  ASSERT_NE(raw.lane, 0u) << "no lane was set up";
  raw.pub.send_bytes(raw.ack_frame(1, 2));
  auto err = RawLane::read_until(raw.pub, wire::ERROR);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->error().code(), wire::PROTOCOL_ERROR);
  EXPECT_NE(err->error().message().find("names lane " + std::to_string(raw.lane) + " twice"), std::string::npos)
      << err->error().message();
  EXPECT_TRUE(raw.pub.wait_closed());
}

// An ACK naming more lanes than a client may write (lanes.max_per_client, 64) is refused before
// the broker looks at any of them.
TEST(HostileFences, AnAckNamingMoreLanesThanAClientWritesIsAProtocolError) {
  BrokerProcess broker(kConfig);
  RawLane raw(broker, wire::BLOCK);
  ASSERT_NE(raw.lane, 0u) << "no lane was set up";
  wire::Header h;
  h.set_type(wire::LANE_ROUTE_ACK);
  h.set_topic("fence.t");
  for (std::uint64_t i = 0; i < 65; ++i) {
    auto* t = h.mutable_lane()->add_targets();
    t->set_lane(raw.lane + i);
    t->set_fence(1);
  }
  raw.pub.send_frame(h);
  auto err = RawLane::read_until(raw.pub, wire::ERROR);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->error().code(), wire::PROTOCOL_ERROR);
  EXPECT_NE(err->error().message().find("names 65 lanes"), std::string::npos) << err->error().message();
  EXPECT_TRUE(raw.pub.wait_closed());
}

// Setup frames for lanes a client is not an end of, or out of turn: a protocol error, and the
// connection is closed with it.
TEST(HostileSetup, ASegmentForALaneNeverOfferedIsAProtocolError) {
  BrokerProcess broker(kConfig);
  RawConnection raw(broker.socket());
  raw.hello("raw-lanes", {shm::kLaneFeature});
  const shm::UniqueFd ack = sealed_memfd(shm::kLaneAckBytes);
  wire::Header segment;
  segment.set_type(wire::LANE_SEGMENT);
  segment.mutable_lane()->set_id(424242);
  segment.set_fd_count(1);
  const int fd = ack.get();
  ASSERT_TRUE(raw.send_frame_with_fds(segment, std::span(&fd, 1)));
  auto err = raw.read_frame();
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->type(), wire::ERROR);
  EXPECT_EQ(err->error().code(), wire::PROTOCOL_ERROR);
  EXPECT_NE(err->error().message().find("never offered"), std::string::npos) << err->error().message();
  EXPECT_TRUE(raw.wait_closed());
  // A lane frame from a client that did not say it speaks lanes is one too.
  RawConnection plain(broker.socket());
  plain.hello("plain");
  wire::Header close;
  close.set_type(wire::LANE_CLOSE);
  close.mutable_lane()->set_id(1);
  plain.send_frame(close);
  auto err2 = plain.read_frame();
  ASSERT_TRUE(err2.has_value());
  EXPECT_EQ(err2->error().code(), wire::PROTOCOL_ERROR);
  EXPECT_TRUE(plain.wait_closed());
}

}  // namespace
}  // namespace ubroker::test

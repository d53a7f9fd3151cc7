#include "lane_subscriber.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>

#include "ubroker/proto/headers.hpp"
#include "ubroker/proto/lane_message.hpp"
#include "ubroker/proto/topic.hpp"

namespace ubroker::detail {
namespace {

constexpr int kRecordsPerTurn = 256;  // then the socket and other lanes get their turn

}  // namespace

Result<std::array<UniqueFd, 2>> LaneSubscriber::offer(std::uint64_t id) {
  if (lanes_.contains(id)) return std::unexpected(Error{Errc::kProtocolError, "the broker offered a lane twice"});
  auto r = shm::LaneReader::create();
  if (!r) return std::unexpected(Error{Errc::kShmRefused, "cannot make a lane: " + r.error().message()});
  // The wake socket pair: this end waits in the loop, the other goes to the publisher
  // (shm::check_wake_fd says why not an eventfd).
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    return std::unexpected(Error{Errc::kShmRefused, "cannot make a lane: no socket pair"});
  }
  UniqueFd wake(pair[0]);
  std::array<UniqueFd, 2> copies{UniqueFd(::fcntl(r->ack_fd(), F_DUPFD_CLOEXEC, 0)), UniqueFd(pair[1])};
  if (!copies[0]) return std::unexpected(Error{Errc::kShmRefused, "cannot make a lane: out of file descriptors"});
  auto lane = std::make_shared<Lane>(std::move(*r), asio::posix::stream_descriptor(strand_, wake.release()));
  lane->id = id;
  lanes_.emplace(id, std::move(lane));
  return copies;
}

const char* LaneSubscriber::open(std::uint64_t id, UniqueFd data, std::uint64_t capacity, Sender sender) {
  auto it = lanes_.find(id);
  if (it == lanes_.end() || it->second->open) return "LANE_OPEN for a lane this client was not setting up";
  if (const char* why = shm::check_lane_fd(data.get(), shm::kLaneHeaderBytes + capacity)) return why;
  if (!it->second->reader.attach(data.get(), capacity)) return "the publisher's segment cannot be mapped";
  it->second->open = true;
  it->second->capacity = capacity;
  it->second->sender = sender;
  wait(it->second);  // nothing routed yet: what comes first is a fence
  return nullptr;
}

void LaneSubscriber::wait(const std::shared_ptr<Lane>& lane) {
  if (lane->at_fence != 0 || lane->paused) return;
  // Armed before sleeping: a record written meanwhile is read now instead of slept through.
  // (Armed again also when a wait is under way: a read in between disarmed it.)
  if (!lane->reader.arm()) {
    lane->reader.disarm();
    wake_later(lane);
    return;
  }
  if (lane->waiting) return;
  lane->waiting = true;
  // A read, not a wait for readiness: the loop watches descriptors edge-triggered, and a wait
  // started with bytes already there (sent while this end was armed but awake) would sleep
  // through them; a read takes them at once.
  lane->wake.async_read_some(asio::buffer(lane->wake_bytes),
                             [this, owner = owner_, weak = std::weak_ptr(lane)](std::error_code ec, std::size_t got) {
                               const auto keep = owner.lock();  // first: `this` lives while the client does
                               auto l = keep ? weak.lock() : nullptr;
                               if (!l || ec) return;  // closed (or the publisher's end went: LANE_CLOSE follows)
                               l->waiting = false;
                               // The rest of what came, if the read may have left some (a bounded
                               // number of reads: a publisher that floods it only makes the next
                               // read complete at once).
                               for (int i = 0; i < 16 && got == l->wake_bytes.size(); ++i) {
                                 const ssize_t more = ::recv(l->wake.native_handle(), l->wake_bytes.data(),
                                                             l->wake_bytes.size(), MSG_DONTWAIT);
                                 got = more > 0 ? static_cast<std::size_t>(more) : 0;
                               }
                               on_wake(l);
                             });
}

void LaneSubscriber::on_wake(const std::shared_ptr<Lane>& lane) {
  lane->reader.disarm();
  switch (drain(*lane)) {
    case Drain::kEmpty: wait(lane); return;
    case Drain::kYield: wake_later(lane); return;
    case Drain::kAtFence:  // the broker's word for it comes behind what it queued before
    case Drain::kPaused:
    case Drain::kBroken: return;
  }
}

LaneSubscriber::Drain LaneSubscriber::drain(Lane& lane, std::uint64_t until) {
  // Up to a fence the broker announced: at most what the ring held (a publisher that keeps
  // writing cannot hold this loop).
  const std::uint64_t most = until != 0 ? lane.capacity / shm::kLaneRecordAlign / 2 + 1 : kRecordsPerTurn;
  std::size_t room = 0;  // messages the receive queue takes before it is asked again
  for (std::uint64_t n = 0; n < most; ++n) {
    if (until == 0 && room == 0 && (room = hooks_.room()) == 0) {
      lane.paused = true;
      return Drain::kPaused;
    }
    auto next = lane.reader.peek();
    if (!next) {
      fail(lane, lane.reader.violation() != nullptr ? lane.reader.violation() : "the lane broke");
      return Drain::kBroken;
    }
    if (!*next) {
      if (until != 0) {
        fail(lane, "the broker announced a fence that is not in the lane");
        return Drain::kBroken;
      }
      return Drain::kEmpty;
    }
    const std::span<const std::byte> record = **next;
    if (lane.reader.peeked_kind() == shm::kLaneFence) {
      std::uint64_t number = 0;
      std::memcpy(&number, record.data(), sizeof number);
      if (until == 0) {
        lane.at_fence = number;  // the rest waits for the broker's word
        return Drain::kAtFence;
      }
      if (number != until) {
        fail(lane, "the lane's fences are not the ones the broker announced");
        return Drain::kBroken;
      }
      lane.reader.consume();
      return Drain::kEmpty;  // the caller applies the broker's word
    }
    // Drops the publisher counted at a full lane are reported with the next message, as the
    // broker reports its own.
    const std::uint64_t dropped = lane.reader.dropped_by_publisher();
    const std::uint64_t new_drops = dropped > lane.dropped_seen ? dropped - lane.dropped_seen : 0;
    lane.dropped_seen = std::max(dropped, lane.dropped_seen);
    if (const char* why = take(lane, record, new_drops)) {
      fail(lane, why);
      return Drain::kBroken;
    }
    room -= std::min(room, lane.last_share->sub_ids.size());  // each may queue it (with no callback)
    lane.reader.consume();
  }
  if (until != 0) {
    fail(lane, "the broker announced a fence the publisher did not write");
    return Drain::kBroken;
  }
  return Drain::kYield;
}

void LaneSubscriber::fence(std::uint64_t id, std::uint64_t number, std::string_view topic,
                           std::span<const std::uint64_t> sub_ids, Segment segment) {
  auto it = lanes_.find(id);
  if (it == lanes_.end()) return;  // closed meanwhile
  const std::shared_ptr<Lane> lane = it->second;
  if (!lane->open) {
    fail(*lane, "a fence before the lane was open");
    return;
  }
  if (lane->at_fence != 0) {  // stopped at it already: the record is consumed here
    if (lane->at_fence != number) {
      fail(*lane, "the lane's fences are not the ones the broker announced");
      return;
    }
    lane->reader.consume();
    lane->at_fence = 0;
  } else if (drain(*lane, number) != Drain::kEmpty) {
    return;  // broken (reported)
  }
  if (segment.publisher_id != 0) {
    const bool known = std::any_of(lane->segments.begin(), lane->segments.end(),
                                   [&](const Segment& s) { return s.publisher_id == segment.publisher_id; });
    if (known || !segment.reader->use(segment.broker_id)) {
      fail(*lane, known ? "the broker passed a segment twice" : "a segment the broker passed cannot be used");
      return;
    }
    lane->segments.push_back(std::move(segment));
  }
  lane->last_share = nullptr;
  if (sub_ids.empty()) {
    if (auto t = lane->topics.find(topic); t != lane->topics.end()) lane->topics.erase(t);
  } else {
    lane->topics[std::string(topic)].sub_ids.assign(sub_ids.begin(), sub_ids.end());
  }
  // What came after the fence is read in the lane's own turn, whether or not a read of the
  // wake socket is under way (the reader may not be armed: a turn can stop at a fence while
  // one is pending, and then no wake-up comes).
  wake_later(lane);
}

bool LaneSubscriber::close(std::uint64_t id, bool broken) {
  if (auto b = broken_.find(id); b != broken_.end()) {
    answer_when_released(b->second, id);
    broken_.erase(b);
    return true;
  }
  auto it = lanes_.find(id);
  if (it == lanes_.end()) return false;
  const std::shared_ptr<Lane> lane = it->second;
  lanes_.erase(it);
  // Its publisher left: what it wrote is read now, ahead of anything the socket brings next.
  if (!broken && lane->open && lane->at_fence == 0) {
    lane->paused = false;
    for (std::uint64_t n = 0; n < lane->capacity / shm::kLaneRecordAlign / 2 + 1; ++n) {  // what it held, at most
      auto next = lane->reader.peek();
      if (!next || !*next || lane->reader.peeked_kind() == shm::kLaneFence) break;  // a fence never announced ends it
      if (take(*lane, **next, 0) != nullptr) break;
      lane->reader.consume();
    }
  }
  std::error_code ignored;
  lane->wake.cancel(ignored);
  answer_when_released(lane->holds, id);
  return true;
}

void LaneSubscriber::answer_when_released(const std::shared_ptr<LaneHolds>& holds, std::uint64_t id) {
  std::erase_if(answering_, [](const std::weak_ptr<LaneHolds>& h) { return h.expired(); });
  answering_.push_back(holds);  // disarmed if the connection goes first
  // The last release may come on any thread, after the client is gone: the answer goes from
  // the loop, and only while the client (and so its loop) lives.
  holds->when_released([this, owner = owner_, weak = std::weak_ptr(holds), id] {
    // Nothing of the loop is kept here (the holds may outlive the client and its io_context):
    // `this`, and so strand_, is used only while the client is held.
    const auto keep = owner.lock();
    auto h = weak.lock();  // alive: this runs inside it
    if (keep && h) {
      asio::post(strand_, [this, owner, h = std::move(h), id] {
        // (Disarmed on the loop when the connection went: a new connection's ids are new.)
        if (const auto alive = owner.lock(); alive && !h->disarmed()) hooks_.done(id);
      });
    }
  });
}

void LaneSubscriber::close_all() {
  for (auto& [id, lane] : lanes_) {
    std::error_code ignored;
    lane->wake.cancel(ignored);
  }
  lanes_.clear();
  broken_.clear();
  for (const auto& h : answering_) {
    if (const auto holds = h.lock()) holds->disarm();
  }
  answering_.clear();
}

void LaneSubscriber::resume() {
  for (auto& [id, lane] : lanes_) {
    if (!lane->paused) continue;
    lane->paused = false;
    wake_later(lane);
  }
}

void LaneSubscriber::wake_later(const std::shared_ptr<Lane>& lane) {
  // The client may be gone by then, or going on another thread of an application's
  // io_context: `this` is used only while the owner is held.
  asio::post(strand_, [this, owner = owner_, weak = std::weak_ptr(lane)] {
    const auto keep = owner.lock();
    if (auto l = keep ? weak.lock() : nullptr; l && l->at_fence == 0) on_wake(l);
  });
}

const char* LaneSubscriber::take(Lane& lane, std::span<const std::byte> record, std::uint64_t new_drops) {
  Bulk bulk;
  const bool is_bulk = lane.reader.peeked_kind() == shm::kLaneBulk;
  if (is_bulk) {
    // Read once into a private copy (the publisher can still write the ring), then checked:
    // the segment must be one the broker passed this lane, the reference inside it (ShmReader).
    shm::LaneBulkRef ref;
    std::memcpy(&ref, record.data(), sizeof ref);
    record = record.subspan(sizeof ref);
    auto seg = std::find_if(lane.segments.begin(), lane.segments.end(),
                            [&](const Segment& s) { return s.publisher_id == ref.segment; });
    if (seg == lane.segments.end()) return "a bulk record naming a segment the broker did not pass";
    if (ref.slot >= shm::kLaneHoldSlots) return "a bulk record with a hold slot out of range";
    bulk = {.segment = seg->broker_id, .offset = ref.offset, .length = ref.length,
            .hold = {.lane = lane.holds, .slot = ref.slot, .generation = ref.generation}};
  }
  proto::LaneMessage m;
  const Lane::Share* share = nullptr;
  if (const char* why = decode_copy(lane, record, m, share)) {
    if (is_bulk) lane.holds->refuse(bulk.hold.slot, bulk.hold.generation);
    return why;
  }
  if (is_bulk && !m.payload.empty()) {
    lane.holds->refuse(bulk.hold.slot, bulk.hold.generation);
    return "a bulk record with a payload of its own";
  }
  drops_.assign(new_drops == 0 ? 0 : share->sub_ids.size(), new_drops);
  const bool taken = hooks_.deliver({.topic = m.topic,
                                     .sub_ids = share->sub_ids,
                                     .dropped = drops_,
                                     .sender = lane.sender,
                                     .headers = m.headers,
                                     .payload = m.payload,
                                     .bulk = is_bulk ? &bulk : nullptr});
  return taken ? nullptr : "a bulk reference outside the segment the broker passed";
}

const char* LaneSubscriber::decode_copy(Lane& lane, std::span<const std::byte> record, proto::LaneMessage& m,
                                        const Lane::Share*& share) {
  // The publisher can still write the ring: the topic and the headers are checked and used
  // from a private copy (the payload is the publisher's to change, like any payload).
  proto::LaneMessage in_ring;
  if (const char* why = proto::split_lane_message(record, in_ring)) return why;
  copy_.resize(in_ring.topic.size() + in_ring.headers.size());
  std::memcpy(copy_.data(), in_ring.topic.data(), in_ring.topic.size());
  if (!in_ring.headers.empty()) std::memcpy(copy_.data() + in_ring.topic.size(), in_ring.headers.data(), in_ring.headers.size());
  m.topic = {reinterpret_cast<const char*>(copy_.data()), in_ring.topic.size()};
  m.headers = std::span(copy_).subspan(in_ring.topic.size());
  m.payload = in_ring.payload;
  // A topic the broker routed here is a valid one: its syntax is checked only to say why not.
  if (lane.last_share != nullptr && m.topic == lane.last_topic) {
    share = lane.last_share;
  } else if (auto it = lane.topics.find(m.topic); it != lane.topics.end()) {
    share = &it->second;
    lane.last_topic = it->first;
    lane.last_share = share;
  } else {
    return proto::check_topic(m.topic) != nullptr ? "a lane message with an invalid topic"
                                                  : "a message on a topic the broker did not route on this lane";
  }
  if (!m.headers.empty()) {
    if (proto::check_headers(m.headers) != nullptr) return "a lane message with invalid headers";
    if (proto::has_broker_header(m.headers)) return "a lane message with a header only the broker may set";
  }
  return nullptr;
}

void LaneSubscriber::fail(Lane& lane, const char* why) {
  const std::uint64_t id = lane.id;
  if (!lanes_.contains(id)) return;
  abandon(id);
  hooks_.broken(id, why);
}

void LaneSubscriber::abandon(std::uint64_t id) {
  auto it = lanes_.find(id);
  if (it == lanes_.end()) return;
  const std::shared_ptr<Lane> keep = it->second;  // the caller's `lane` may be its only other owner
  lanes_.erase(it);
  broken_.emplace(id, keep->holds);  // the broker's LANE_CLOSE is answered once they are back
  std::error_code ignored;
  keep->wake.cancel(ignored);
}

}  // namespace ubroker::detail

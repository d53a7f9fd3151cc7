// The subscribing end of a client's direct lanes (docs/architecture.md, "Direct lanes").
//
// For a LANE_OFFER this end makes the ack segment and a wake socket pair, whose other end the
// publisher writes when this end sleeps; LANE_OPEN brings the publisher's data segment and
// its identity as the broker knows it. Each lane's wake socket waits in the client's loop
// beside the connection.
//
// What a lane may carry is the broker's word, never the publisher's: a topic travels on the
// lane only after a LANE_FENCE from the broker named it with the subscriptions it goes to.
// The publisher marks every route change with a fence record in the lane; reading stops at
// one until the broker's LANE_FENCE for it arrives, and a LANE_FENCE from the socket is met
// by reading the lane up to that record first. So the messages of one publisher keep their
// order whichever way each came. Anything else in the lane (a malformed record, a topic not
// routed here, a header only the broker may set) breaks the lane and is reported. A lane the
// subscriber stops reading at a fence the broker never announces is the broker's to close (it
// sees the lane not read for timeouts.slow_consumer_ms).
//
// A bulk record names a segment of the publisher's that the broker passed with a fence
// (LANE_FENCE with lane.segment): its payload is read in place, held until every message of
// it is gone (LaneHolds), and released into this end's ack segment. A closed lane's end
// answers the broker once it holds nothing of it.
//
// Threads: the client's loop only (the strand).
#pragma once

#include <asio/posix/stream_descriptor.hpp>
#include <asio/strand.hpp>
#include <asio/io_context.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lane_holds.hpp"
#include "shm_reader.hpp"
#include "ubroker/message.hpp"
#include "ubroker/error.hpp"
#include "ubroker/shm/lane.hpp"
#include "ubroker/proto/lane_message.hpp"
#include "ubroker/proto/string_hash.hpp"

namespace ubroker::detail {

class LaneSubscriber {
 public:
  using Strand = asio::strand<asio::io_context::executor_type>;
  struct Bulk {  // a bulk record's payload: in the broker's segment `segment`, held by the lane
    std::uint64_t segment = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    ShmReader::LaneHold hold;
  };
  struct Delivery {
    std::string_view topic;
    std::span<const std::uint64_t> sub_ids;
    std::span<const std::uint64_t> dropped;  // per sub_ids entry, dropped since the previous delivery
    Sender sender;
    std::span<const std::byte> headers;  // checked
    std::span<const std::byte> payload;
    const Bulk* bulk = nullptr;  // set: the payload is this, in shared memory
  };
  struct Hooks {
    // False: a bulk reference that cannot be used (nothing was delivered; the lane breaks).
    std::function<bool(const Delivery&)> deliver;
    // The lane broke: this end dropped it and the broker should close it (LANE_ERROR).
    std::function<void(std::uint64_t lane, const char* why)> broken;
    // How many more messages the receive queue takes now (0: deliveries must wait, and
    // reading resumes with resume()). Asked once per that many, not per message.
    std::function<std::size_t()> room;
    // The end of a closed lane is done: it read what it was going to and holds nothing of it
    // (LANE_CLOSE back to the broker). On the loop.
    std::function<void(std::uint64_t lane)> done;
  };
  LaneSubscriber(Strand strand, Hooks hooks) : strand_(std::move(strand)), hooks_(std::move(hooks)) {}
  // What owns this object (the client): every handler this end posts holds it while it runs,
  // so the client cannot be destroyed under a handler running on another thread of the
  // application's io_context, and a handler that runs after it is gone does nothing.
  void set_owner(std::weak_ptr<const void> owner) { owner_ = std::move(owner); }

  // LANE_OFFER: a duplicate of the ack segment and the wake pair's other end, to send back.
  Result<std::array<UniqueFd, 2>> offer(std::uint64_t id);
  // LANE_OPEN: the publisher's segment (checked) and identity. Why it was refused, or nullptr.
  const char* open(std::uint64_t id, UniqueFd data, std::uint64_t capacity, Sender sender);
  // LANE_FENCE: reads the lane up to the fence, then applies the broker's word for `topic`
  // (no sub_ids: the topic leaves the lane), and the segment it passed, if any (`reader`
  // maps it; the publisher's bulk records name it by `publisher_id` from then on).
  struct Segment {
    std::uint64_t publisher_id = 0;
    std::uint64_t broker_id = 0;
    std::shared_ptr<ShmReader> reader;
  };
  void fence(std::uint64_t id, std::uint64_t number, std::string_view topic, std::span<const std::uint64_t> sub_ids,
             Segment segment);
  // LANE_CLOSE: unless `broken`, what is in the lane is read first (its publisher left).
  // False if this end has no such lane (the caller answers the broker); else hooks.done is
  // called once nothing of the lane is held any more.
  bool close(std::uint64_t id, bool broken);
  void close_all();
  // This end stops reading the lane (the caller reports why); the broker's LANE_CLOSE is
  // answered as close() does.
  void abandon(std::uint64_t id);
  [[nodiscard]] bool has(std::uint64_t id) const { return lanes_.contains(id); }
  // Reads on after a pause (no room).
  void resume();

 private:
  struct Lane {
    Lane(shm::LaneReader r, asio::posix::stream_descriptor w)
        : reader(std::move(r)), wake(std::move(w)), holds(std::make_shared<LaneHolds>(reader.mappings())) {}
    Lane(const Lane&) = delete;
    Lane& operator=(const Lane&) = delete;
    ~Lane() {
      for (const Segment& s : segments) s.reader->unuse(s.broker_id);
    }
    shm::LaneReader reader;
    asio::posix::stream_descriptor wake;  // owns this end of the wake socket pair
    std::array<std::byte, 64> wake_bytes{};
    std::uint64_t capacity = 0;
    std::uint64_t id = 0;
    Sender sender;
    bool open = false;
    bool waiting = false;       // an async_wait is under way
    bool paused = false;        // stopped: no room in the receive queue
    std::uint64_t at_fence = 0;  // stopped at this fence record (0: not stopped)
    std::uint64_t dropped_seen = 0;
    struct Share {
      std::vector<std::uint64_t> sub_ids;
    };
    std::unordered_map<std::string, Share, proto::StringHash, std::equal_to<>> topics;
    // The topic read last and its share: a run of one topic is compared, not hashed (a fence
    // changing `topics` forgets it).
    std::string last_topic;
    const Share* last_share = nullptr;
    std::shared_ptr<LaneHolds> holds;
    std::vector<Segment> segments;  // passed by the broker, kept mapped while the lane lives
  };
  enum class Drain { kEmpty, kAtFence, kPaused, kBroken, kYield };
  // Reads records until the lane is empty, a fence stops it (`until`: the fence the socket
  // announced, read and applied by the caller), a pause, or a turn's worth.
  Drain drain(Lane& lane, std::uint64_t until = 0);
  void wait(const std::shared_ptr<Lane>& lane);
  // on_wake in the lane's next turn (unless it stops at a fence meanwhile).
  void wake_later(const std::shared_ptr<Lane>& lane);
  void on_wake(const std::shared_ptr<Lane>& lane);
  void fail(Lane& lane, const char* why);
  // Decodes a record with its topic and headers copied out of the ring and checked there:
  // the topic must be one the broker routed on this lane (`share` set to it).
  const char* decode_copy(Lane& lane, std::span<const std::byte> record, proto::LaneMessage& m, const Lane::Share*& share);
  // Delivers a message or bulk record (`new_drops`: the publisher's drops reported with it):
  // why the lane breaks, or nullptr.
  const char* take(Lane& lane, std::span<const std::byte> record, std::uint64_t new_drops);
  void answer_when_released(const std::shared_ptr<LaneHolds>& holds, std::uint64_t id);

  Strand strand_;
  Hooks hooks_;
  std::weak_ptr<const void> owner_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Lane>> lanes_;
  // Lanes this end found broken: their holds, until the broker's LANE_CLOSE.
  std::unordered_map<std::uint64_t, std::shared_ptr<LaneHolds>> broken_;
  std::vector<std::weak_ptr<LaneHolds>> answering_;  // closed lanes whose answer waits for their holds
  std::vector<std::uint64_t> drops_;  // scratch
  std::vector<std::byte> copy_;       // scratch: a record's topic and headers
};

}  // namespace ubroker::detail

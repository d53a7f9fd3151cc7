// ClientCore's direct lanes: the LANE_* frames from the broker, handed to the publishing end
// (lane_publisher.hpp) or the subscribing end (lane_subscriber.hpp), and what they send back.
#include <fmt/format.h>

#include "client_core.hpp"

namespace ubroker::detail {

LaneSubscriber::Hooks ClientCore::lane_hooks() {
  return {
      .deliver =
          [this](const LaneSubscriber::Delivery& d) {
            return deliver({.topic = d.topic, .sub_ids = d.sub_ids, .dropped = d.dropped, .sender = d.sender,
                            .headers = d.headers, .lane_bulk = d.bulk},
                           d.payload);
          },
      .broken = [this](std::uint64_t lane, const char* why) { report_lane(lane, why); },
      .room =
          [this]() -> std::size_t {
            LockGuard lk(queue_mu_);
            if (queue_.size() < options_.receive_queue) return options_.receive_queue - queue_.size();
            read_paused_for_queue_ = true;  // receive() resumes the socket and the lanes
            return 0;
          },
      .done = [this](std::uint64_t lane) { lane_done(lane); },
  };
}

void ClientCore::lane_done(std::uint64_t lane) {
  // Done with it: the broker's books for the lane are final now.
  wire::Header done;
  done.set_type(wire::LANE_CLOSE);
  done.mutable_lane()->set_id(lane);
  (void)send_frame(done, {});
}

void ClientCore::report_lane(std::uint64_t lane, std::string_view why, bool broken) {
  wire::Header h;
  h.set_type(wire::LANE_ERROR);
  h.mutable_lane()->set_id(lane);
  h.mutable_lane()->set_reason(std::string(why));
  h.mutable_lane()->set_broken(broken);
  (void)send_frame(h, {}, -1, false);  // may run under the lanes' lock: never waits
}

void ClientCore::lane_frame(const wire::Header& h) {
  const std::uint64_t id = h.lane().id();
  // The fds a frame announced are its own, taken in order whatever becomes of the frame.
  std::vector<UniqueFd> fds;
  for (std::uint32_t i = 0; i < h.fd_count(); ++i) {
    fds.push_back(std::move(rfds_.front()));
    rfds_.pop_front();
  }
  auto expect_fds = [&](std::size_t n) {
    if (fds.size() == n) return true;
    fail(Error{Errc::kFdError, fmt::format("a {} frame from the broker with {} fd(s), not {}",
                                           wire::FrameType_Name(h.type()), fds.size(), n)});
    return false;
  };
  switch (h.type()) {
    case wire::LANE_OFFER: {
      if (!expect_fds(0)) return;
      wire::Header answer;
      answer.set_type(wire::LANE_SEGMENT);
      answer.mutable_lane()->set_id(id);
      if (h.lane().publisher()) {
        // Every message this client sends by lane must fit in it: a larger one would have to
        // go through the broker and could overtake the lane.
        // (A larger one still comes: that lane is given up then, and the broker carries on.)
        constexpr std::uint64_t kMostBesidesPayload = 1024 + 16 * 1024 + 64;  // topic, headers, record heads
        const std::uint64_t fits = h.lane().capacity() / 2;
        const bool bulk = shm_max_segment_bytes_.load() != 0;
        if (!shm::valid_lane_capacity(h.lane().capacity()) ||
            (fits <= max_frame_bytes_.load() + kMostBesidesPayload &&
             (!bulk || options_.shm_threshold + kMostBesidesPayload > fits))) {
          report_lane(id, "this publisher's messages can be larger than the lane", false);
          return;
        }
        auto fd = lane_pub_.offer(id, h.lane().capacity());
        if (!fd) {
          report_lane(id, fd.error().message);
          return;
        }
        answer.set_fd_count(1);
        (void)send_frame_with_fds(answer, std::span(&*fd, 1));
      } else {
        auto made = lane_sub_.offer(id);
        if (!made) {
          report_lane(id, made.error().message);
          return;
        }
        answer.set_fd_count(2);
        (void)send_frame_with_fds(answer, *made);
      }
      return;
    }
    case wire::LANE_OPEN: {
      const char* why = nullptr;
      if (lane_pub_.has(id)) {
        if (!expect_fds(2)) return;
        why = lane_pub_.open(id, std::move(fds[0]), std::move(fds[1]));
      } else if (lane_sub_.has(id)) {
        if (!expect_fds(1)) return;
        why = lane_sub_.open(id, std::move(fds[0]), h.lane().capacity(),
                             {.client_id = h.sender_id(), .uid = h.sender_uid(), .pid = h.sender_pid()});
      } else {
        return;  // this end dropped it already (and said so)
      }
      if (why != nullptr) {
        lane_pub_.close(id);
        lane_sub_.abandon(id);
        report_lane(id, why);
      }
      return;
    }
    case wire::LANE_ROUTE:
      if (!expect_fds(0)) return;
      lane_pub_.route(h, lane_ack_, [this](const wire::Header& ack) { (void)send_frame(ack, {}); });
      return;
    case wire::LANE_FENCE: {
      if (fds.size() > (h.lane().segment() != 0 ? 1u : 0u) && !expect_fds(0)) return;
      LaneSubscriber::Segment segment;
      if (h.lane().segment() != 0) {
        // A segment of the publisher's, for its bulk records from this fence on (its fd comes
        // the first time the broker passes it to this client).
        if (!fds.empty()) {
          if (auto why = reader_->attach(h.shm().segment(), std::move(fds[0]))) {
            lane_sub_.abandon(id);
            report_lane(id, *why);
            return;
          }
        }
        segment = {.publisher_id = h.lane().segment(), .broker_id = h.shm().segment(), .reader = reader_};
      }
      lane_sub_.fence(id, h.lane().fence(), h.topic(), {h.sub_ids().data(), static_cast<std::size_t>(h.sub_ids_size())},
                      std::move(segment));
      return;
    }
    case wire::LANE_CLOSE: {
      if (!expect_fds(0)) return;
      if (h.lane().holds_released()) {  // the publisher's: its subscriber holds nothing of it now
        lane_pub_.holds_released(id);
        return;
      }
      lane_pub_.close(id);
      // The subscribing end answers once it read what it was going to and holds nothing of it.
      if (!lane_sub_.close(id, h.lane().broken())) lane_done(id);
      return;
    }
    default: return;
  }
}

}  // namespace ubroker::detail

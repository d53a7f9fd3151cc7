// The bulk payloads a lane's subscriber holds: messages of the publisher's shared memory that
// the lane carried and the application has not let go yet. Each release is written into the
// lane's ack segment (shm::release_hold), where the publisher takes its space back without
// the broker. When the lane closes, its end answers the broker (LANE_CLOSE) only once nothing
// is held any more, so the publisher learns when every hold came back.
//
// Thread-safe: held() on the client's loop, release() from whichever thread drops a message.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "ubroker/shm/lane.hpp"

namespace ubroker::detail {

class LaneHolds {
 public:
  explicit LaneHolds(std::shared_ptr<shm::LaneMappings> maps) : maps_(std::move(maps)) {}
  // One more payload held.
  void held() noexcept { out_.fetch_add(1, std::memory_order_relaxed); }
  // A held payload is let go (after its last read).
  void release(std::uint32_t slot, std::uint32_t generation) noexcept;
  // A payload that was never handed out (unusable): released at once.
  void refuse(std::uint32_t slot, std::uint32_t generation) noexcept { shm::release_hold(*maps_, slot, generation); }
  // The lane closed: `done` runs once, when nothing is held any more: now, on this thread, if
  // nothing is, else on the thread that releases the last.
  void when_released(std::function<void()> done);
  // The connection is gone: no answer is due any more (a new connection's lane ids are new).
  void disarm() noexcept {
    disarmed_.store(true);
    answered_.store(true);
  }
  [[nodiscard]] bool disarmed() const noexcept { return disarmed_.load(); }

 private:
  std::shared_ptr<shm::LaneMappings> maps_;
  std::atomic<std::uint32_t> out_{0};
  std::function<void()> done_;  // written before closing_ is set
  std::atomic<bool> closing_{false};
  std::atomic<bool> answered_{false};
  std::atomic<bool> disarmed_{false};
};

}  // namespace ubroker::detail

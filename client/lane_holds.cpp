#include "lane_holds.hpp"

namespace ubroker::detail {

void LaneHolds::release(std::uint32_t slot, std::uint32_t generation) noexcept {
  shm::release_hold(*maps_, slot, generation);
  // Dekker with when_released: either this sees the lane closing, or that sees nothing held;
  // answered_ makes sure the answer goes once if both do.
  if (out_.fetch_sub(1, std::memory_order_seq_cst) == 1 && closing_.load(std::memory_order_seq_cst) &&
      !answered_.exchange(true)) {
    const auto done = std::move(done_);  // what it holds goes with this call
    done();
  }
}

void LaneHolds::when_released(std::function<void()> done) {
  done_ = std::move(done);
  closing_.store(true, std::memory_order_seq_cst);
  if (out_.load(std::memory_order_seq_cst) == 0 && !answered_.exchange(true)) {
    const auto f = std::move(done_);
    f();
  }
}

}  // namespace ubroker::detail

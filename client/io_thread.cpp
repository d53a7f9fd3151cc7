#include "io_thread.hpp"

#include <asio/post.hpp>

#include "ubroker/proto/busy_poll.hpp"

namespace ubroker::detail {

IoThread::~IoThread() {
  stop();
  join();
}

void IoThread::start() {
  thread_ = std::thread([this] { run(); });
}

void IoThread::stop() {
  {
    LockGuard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void IoThread::join() {
  if (!thread_.joinable()) return;
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

void IoThread::run() {
  UniqueLock lk(mu_);
  for (;;) {
    while (!stopping_ && (leader_ || (!resume_ && Clock::now() < linger_until_))) {
      parked_ = true;
      cv_.notify_all();
      // Timed even while a caller leads: a lead that ends without asking the thread back does
      // not wake it (that would cost the wake-up leading saves), so it looks again each period.
      cv_.wait_for(lk.native(), kLinger);
    }
    parked_ = false;
    resume_ = false;
    lk.unlock();
    const std::size_t ran = proto::run_one_with_busy_poll(io_, busy_poll_, std::chrono::hours(1));
    lk.lock();
    if (ran == 0 && io_.stopped()) return;  // out of work: the client closed
  }
}

IoThread::Role IoThread::lead(Clock::time_point deadline) {
  UniqueLock lk(mu_);
  if (!leader_ && !stopping_) {
    leader_ = true;
    if (parked_) return Role::kLeader;
    asio::post(io_, [] {});  // brings the thread out of its wait; it parks after this handler
    const bool parked = cv_.wait_until(lk.native(), deadline, [&] {
      mu_.assert_held();
      return parked_ || stopping_;
    });
    if (parked && !stopping_) return Role::kLeader;
    leader_ = false;
  }
  ++followers_;
  return Role::kFollower;
}

void IoThread::end_lead(bool resume_now) {
  LockGuard lk(mu_);
  leader_ = false;
  if (resume_now || followers_ > 0) {
    resume_ = true;
    cv_.notify_all();
  } else {
    linger_until_ = Clock::now() + kLinger;
  }
}

void IoThread::end_follow() {
  LockGuard lk(mu_);
  --followers_;
}

std::size_t IoThread::run_one(Clock::duration timeout) {
  return proto::run_one_with_busy_poll(io_, busy_poll_, timeout);
}

void IoThread::resume() {
  LockGuard lk(mu_);
  resume_ = true;
  if (parked_ && !leader_) cv_.notify_all();
}

}  // namespace ubroker::detail

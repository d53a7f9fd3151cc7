#include "io_thread.hpp"

#include <asio/post.hpp>

#include "library_thread.hpp"
#include "ubroker/proto/busy_poll.hpp"

namespace ubroker::detail {

IoThread::~IoThread() {
  stop();
  join();
}

void IoThread::start() {
  thread_ = start_library_thread("ubroker-io", [this] { run(); });
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
      if (leader_ && Clock::now() - lead_started_ >= kLinger) {
        // A long lead (a receive() on a quiet client): sleep until it ends, which then wakes
        // this thread (end_lead), so an idle client costs no wake-ups.
        cv_.wait(lk.native());
      } else {
        // A short lead ends without waking this thread (that would cost the wake-up leading
        // saves): it looks again when the period is over.
        cv_.wait_until(lk.native(), leader_ ? lead_started_ + kLinger : linger_until_);
      }
    }
    parked_ = false;
    resume_ = false;
    lk.unlock();
    const std::size_t ran = proto::run_one_with_busy_poll(io_, busy_poll_, std::chrono::hours(1));
    lk.lock();
    if (ran == 0 && io_.stopped()) {  // out of work: the client closed
      stopping_ = true;  // callers asking to lead now follow, as nothing parks any more
      cv_.notify_all();
      return;
    }
  }
}

IoThread::Role IoThread::lead(Clock::time_point deadline) {
  UniqueLock lk(mu_);
  if (!leader_ && !stopping_ && !io_.stopped()) {
    leader_ = true;
    lead_started_ = Clock::now();
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
  const auto now = Clock::now();
  if (resume_now || followers_ > 0) {
    resume_ = true;
    cv_.notify_all();
    return;
  }
  linger_until_ = now + kLinger;
  // After a long lead the thread sleeps untimed (run()): wake it to start its linger.
  if (now - lead_started_ >= kLinger) cv_.notify_all();
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

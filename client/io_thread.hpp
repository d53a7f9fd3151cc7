// IoThread: the client's own I/O thread, which steps aside while an application thread that
// waits (in receive(), request(), flush()) runs the client's io_context itself: leader/followers.
//
// Why: when the I/O thread reads the message a caller waits for, each message costs two
// wake-ups and a hand-off (the socket wakes the I/O thread, which wakes the caller). When the
// waiting thread runs the loop itself, the socket wakes the very thread that wants the message.
//
// Roles. At most one waiting caller leads at a time; other waiters are followers and wait on
// their condition variables as before, served by the leader or the I/O thread. To lead, a
// caller asks the I/O thread to park: a no-op handler brings it out of its wait, and it parks
// between two handlers, never inside one, so the client's strand still runs one handler at a
// time. When a lead ends, the I/O thread stays parked for a short linger (a loop of blocking
// calls then hands the loop back and forth for nothing) unless the leader asks it back at once:
// when callbacks, asynchronous requests or followers need the loop while nobody waits. Work
// posted from outside (a reconnect, a write to finish) and closing end the linger too. A parked
// I/O thread looks again when the linger ends, and after a lead of a linger period or more
// the lead's end wakes it, so the loop is never left unrun for longer, and a caller waiting
// long on a quiet client costs no periodic wake-ups.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <thread>

#include "annotated_mutex.hpp"

namespace ubroker::detail {

class IoThread {
 public:
  using Clock = std::chrono::steady_clock;
  IoThread(asio::io_context& io, std::chrono::microseconds busy_poll) : io_(io), busy_poll_(busy_poll) {}
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  void start();
  // For good: the thread stops parking and runs the loop until it is out of work.
  void stop();
  // Waits for the thread to end (after stop() and the loop running dry); on the thread itself
  // (the last reference dropped in a handler) it detaches instead.
  void join();

  enum class Role { kLeader, kFollower };
  // A waiting caller asks to lead: kLeader once the I/O thread has parked (by `deadline`),
  // else kFollower (another caller leads, the thread did not park in time, or it is stopping).
  // Each role ends with end_lead() or end_follow().
  Role lead(Clock::time_point deadline);
  // `resume_now`: the loop has work with nobody waiting for it (callbacks, async requests).
  void end_lead(bool resume_now);
  void end_follow();
  // The leader runs one handler (spinning the busy-poll window first), waiting up to `timeout`.
  std::size_t run_one(Clock::duration timeout);
  // Work was posted from outside the loop: end the linger.
  void resume();

 private:
  void run();

  static constexpr auto kLinger = std::chrono::milliseconds(2);
  asio::io_context& io_;
  const std::chrono::microseconds busy_poll_;
  Mutex mu_;
  std::condition_variable cv_;  // parked_ changed (callers), or a lead ended / stop (the thread)
  bool leader_ UBROKER_GUARDED_BY(mu_) = false;  // a caller runs the loop
  bool parked_ UBROKER_GUARDED_BY(mu_) = false;  // the thread is outside the loop, between two handlers
  bool resume_ UBROKER_GUARDED_BY(mu_) = false;  // end the linger
  bool stopping_ UBROKER_GUARDED_BY(mu_) = false;
  int followers_ UBROKER_GUARDED_BY(mu_) = 0;
  Clock::time_point linger_until_ UBROKER_GUARDED_BY(mu_){};
  Clock::time_point lead_started_ UBROKER_GUARDED_BY(mu_){};
  std::thread thread_;
};

}  // namespace ubroker::detail

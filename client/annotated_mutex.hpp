// A mutex and its locks as clang's -Wthread-safety understands them, so the compiler checks
// which lock guards what (members marked UBROKER_GUARDED_BY, functions UBROKER_REQUIRES).
// libstdc++'s std::mutex carries no annotations; these wrap it at no cost. Other compilers
// see plain std::mutex code (the macros expand to nothing).
//
// Condition variables wait on UniqueLock::native(); a predicate run by such a wait holds the
// lock but the analysis cannot see that, so it says so with assert_held().
#pragma once

#include <mutex>

#if defined(__clang__)
#define UBROKER_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define UBROKER_THREAD_ANNOTATION(x)
#endif

#define UBROKER_CAPABILITY(x) UBROKER_THREAD_ANNOTATION(capability(x))
#define UBROKER_SCOPED_CAPABILITY UBROKER_THREAD_ANNOTATION(scoped_lockable)
#define UBROKER_GUARDED_BY(x) UBROKER_THREAD_ANNOTATION(guarded_by(x))
#define UBROKER_REQUIRES(...) UBROKER_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define UBROKER_EXCLUDES(...) UBROKER_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define UBROKER_ACQUIRE(...) UBROKER_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define UBROKER_RELEASE(...) UBROKER_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define UBROKER_ASSERT_CAPABILITY(x) UBROKER_THREAD_ANNOTATION(assert_capability(x))
#define UBROKER_ACQUIRED_AFTER(...) UBROKER_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define UBROKER_NO_THREAD_SAFETY_ANALYSIS UBROKER_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace ubroker::detail {

class UBROKER_CAPABILITY("mutex") Mutex {
 public:
  void lock() UBROKER_ACQUIRE() { mu_.lock(); }
  void unlock() UBROKER_RELEASE() { mu_.unlock(); }
  // Tells the analysis the caller holds this (a condition variable's predicate).
  void assert_held() const UBROKER_ASSERT_CAPABILITY(this) {}
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

// std::lock_guard, annotated.
class UBROKER_SCOPED_CAPABILITY LockGuard {
 public:
  explicit LockGuard(Mutex& mu) UBROKER_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~LockGuard() UBROKER_RELEASE() { mu_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  Mutex& mu_;
};

// std::unique_lock, annotated; native() is for condition variables.
class UBROKER_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& mu) UBROKER_ACQUIRE(mu) : lk_(mu.native()) {}
  ~UniqueLock() UBROKER_RELEASE() {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;
  void lock() UBROKER_ACQUIRE() { lk_.lock(); }
  void unlock() UBROKER_RELEASE() { lk_.unlock(); }
  std::unique_lock<std::mutex>& native() { return lk_; }

 private:
  std::unique_lock<std::mutex> lk_;
};

}  // namespace ubroker::detail

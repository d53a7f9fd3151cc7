#pragma once
// A thread the library starts: named, so that top, gdb and /proc tell it from the
// application's, and with no asynchronous signal delivered to it.
//
// A process-directed signal (Ctrl-C's SIGINT, SIGTERM) goes to any one thread that does not
// block it. If that is a thread of this library, the application's handler runs there and
// the application's own blocking call (a read of a terminal, a sleep) is not interrupted:
// brokerctl `pub` sat in read() after Ctrl-C. So the library's threads start with every
// signal blocked (a thread inherits the mask of the thread that creates it), and the
// application's threads keep receiving what the application asked for. Synchronous signals
// (SIGSEGV and the like) still go to the faulting thread whatever its mask.
#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

namespace ubroker::detail {

// `name`: at most 15 characters (the kernel's limit).
template <typename Fn>
std::thread start_library_thread(const char* name, Fn&& fn) {
  sigset_t all;
  sigset_t before;
  ::sigfillset(&all);
  // pthread_sigmask and pthread_setname_np fail only for arguments that are fixed here (a
  // valid `how`, a short name); the thread would still work, just unmasked or unnamed.
  const bool masked = ::pthread_sigmask(SIG_SETMASK, &all, &before) == 0;
  struct Restore {
    bool masked;
    sigset_t* before;
    ~Restore() {
      if (masked) ::pthread_sigmask(SIG_SETMASK, before, nullptr);
    }
  } restore{masked, &before};
  std::thread thread(std::forward<Fn>(fn));
  (void)::pthread_setname_np(thread.native_handle(), name);
  return thread;
}

}  // namespace ubroker::detail

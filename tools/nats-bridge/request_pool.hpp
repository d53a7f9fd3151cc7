// A fixed set of threads for the blocking NATS requests the bridge forwards (the NATS C client's
// request call waits), so a slow service behind NATS holds a worker, never the local client's
// I/O thread. At most `capacity` requests are queued or running; beyond that try_submit says no
// and the caller answers "busy" at once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ubroker::bridge {

class RequestPool {
 public:
  RequestPool(unsigned threads, std::size_t capacity);
  ~RequestPool();  // finishes what was accepted, then joins
  RequestPool(const RequestPool&) = delete;
  RequestPool& operator=(const RequestPool&) = delete;

  bool try_submit(std::function<void()> task);

 private:
  void work();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::size_t accepted_ = 0;  // queued or running
  std::size_t capacity_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace ubroker::bridge

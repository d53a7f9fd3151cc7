// Standard input, read so that Ctrl-C is never missed.
#pragma once

#include <signal.h>

#include <string>

namespace ubroker::ctl {

// Checking g_interrupted and then blocking in read() leaves a window: a SIGINT that lands
// between the two runs the handler, and read() then waits for ever (`pub` sat on a terminal
// after Ctrl-C). So while a StdinInput lives, SIGINT and SIGTERM stay blocked on this thread
// and ppoll() unblocks them only while it waits: a signal that came before the wait is
// delivered inside it and ends it. The client library's threads block every signal, so a
// process-directed signal waits for this thread instead of landing elsewhere.
class StdinInput {
 public:
  StdinInput();
  ~StdinInput();
  StdinInput(const StdinInput&) = delete;
  StdinInput& operator=(const StdinInput&) = delete;

  enum class Got { kData, kEnd, kInterrupted, kError };
  // Waits for input and appends what arrived to `into`. kEnd at the end of input (a
  // terminal's ^D); kError with errno set when reading failed.
  Got read_some(std::string& into);
  // Appends all of it: kEnd once read to its end, or kInterrupted or kError on the way.
  Got read_to_end(std::string& into);

 private:
  sigset_t before_{};
};


}  // namespace ubroker::ctl

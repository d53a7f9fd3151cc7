// Counts what was lost between two bridges. An exporting bridge numbers the messages it hands
// to NATS per subject (Bridge-Seq: "EPOCH:N"), under an epoch chosen at random when it starts
// or forgets its numbers; an importing bridge remembers the last number per origin and
// subject, so a gap is messages that left one bridge and never reached the other (a NATS
// server killed with them in its buffers). Both sides hold a bounded number of subjects: past
// it they start over (a new epoch, or forgetting), which can only miss a gap, never invent one.
// Lookups take string_views (no allocation once a subject is known).
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

#include "ubroker/proto/string_hash.hpp"

namespace ubroker::bridge {

using proto::StringMap;

class SequenceNumbers {  // the exporting side
 public:
  explicit SequenceNumbers(std::size_t max_subjects = 65536);
  struct Stamp {
    std::uint64_t epoch;
    std::uint64_t seq;
  };
  // The next number for `subject`; taken only by a message handed to NATS (commit()).
  Stamp next(std::string_view subject);
  void commit(std::string_view subject, Stamp s);

 private:
  std::mutex mu_;
  std::size_t max_subjects_;
  std::mt19937_64 rng_;
  std::uint64_t epoch_;
  StringMap<std::uint64_t> last_;  // subject -> last number committed
};

class GapCounter {  // the importing side
 public:
  explicit GapCounter(std::size_t max_subjects = 65536) : max_subjects_(max_subjects) {}
  // Returns how many messages went missing before this one (0 for the first of an epoch).
  std::uint64_t saw(std::string_view origin, std::string_view subject, std::uint64_t epoch, std::uint64_t seq);

 private:
  struct Last {
    std::uint64_t epoch;
    std::uint64_t seq;
  };
  std::mutex mu_;
  std::size_t max_subjects_;
  std::string key_;  // scratch: origin '\n' subject
  StringMap<Last> last_;
};

}  // namespace ubroker::bridge

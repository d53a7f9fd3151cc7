#include "sequence_tracker.hpp"

namespace ubroker::bridge {

SequenceNumbers::SequenceNumbers(std::size_t max_subjects)
    : max_subjects_(max_subjects), rng_(std::random_device{}()), epoch_(rng_() | 1) {}

SequenceNumbers::Stamp SequenceNumbers::next(std::string_view subject) {
  std::lock_guard lk(mu_);
  auto it = last_.find(subject);
  return {epoch_, (it == last_.end() ? 0 : it->second) + 1};
}

void SequenceNumbers::commit(std::string_view subject, Stamp s) {
  std::lock_guard lk(mu_);
  if (s.epoch != epoch_) return;  // numbered before a reset: the importer sees a new epoch anyway
  if (auto it = last_.find(subject); it != last_.end()) {
    it->second = s.seq;
    return;
  }
  if (last_.size() >= max_subjects_) {
    last_.clear();
    epoch_ = rng_() | 1;  // importers start over with this epoch
    return;
  }
  last_.emplace(std::string(subject), s.seq);
}

std::uint64_t GapCounter::saw(std::string_view origin, std::string_view subject, std::uint64_t epoch, std::uint64_t seq) {
  std::lock_guard lk(mu_);
  key_.assign(origin).append(1, '\n').append(subject);
  auto it = last_.find(std::string_view(key_));
  if (it == last_.end()) {
    if (last_.size() >= max_subjects_) last_.clear();
    last_.emplace(key_, Last{epoch, seq});
    return 0;
  }
  Last& l = it->second;
  const std::uint64_t missing = l.epoch == epoch && seq > l.seq + 1 ? seq - l.seq - 1 : 0;
  l = {epoch, seq};
  return missing;
}

}  // namespace ubroker::bridge

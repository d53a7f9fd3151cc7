// OutQueue: pieces_ and msg_ends_ are vectors consumed from a head index and compacted when
// the head passes half, so steady-state appends and consumes allocate nothing.
#include "out_queue.hpp"

#include <algorithm>

namespace ubroker::broker {

std::byte* OutQueue::append_inline(std::size_t n) {
  if (!tail_ || tail_->capacity() - tail_used_ < n) {
    tail_ = pool_->acquire(n);
    tail_used_ = 0;
  }
  std::byte* p = tail_->data() + tail_used_;
  // Extend the last piece when it ends exactly where these bytes start.
  if (piece_head_ < pieces_.size()) {
    Piece& last = pieces_.back();
    if (last.chunk.get() == tail_.get() && last.data + last.len == p) {
      last.len += n;
      tail_used_ += n;
      appended_ += n;
      return p;
    }
  }
  pieces_.push_back({tail_, p, n});
  tail_used_ += n;
  appended_ += n;
  return p;
}

void OutQueue::append_ref(const ChunkRef& chunk, const std::byte* data, std::size_t n) {
  if (n == 0) return;
  pieces_.push_back({chunk, const_cast<std::byte*>(data), n});
  appended_ += n;
}

void OutQueue::end_message(bool delivery) {
  msg_ends_.push_back(appended_);
  if (delivery) delivery_ends_.push_back(appended_);
}

void OutQueue::attach_fd(shm::UniqueFd fd) {
  fd_marks_.push_back({appended_, std::move(fd)});
}

std::size_t OutQueue::gather(std::span<iovec> iov, Fds& fds) const noexcept {
  fds.count = 0;
  std::uint64_t stop = appended_;  // stream position the batch must not pass
  for (const FdMark& m : fd_marks_) {
    if (m.at == sent_) {
      if (fds.count < kMaxFdsPerMessage) fds.fd[fds.count++] = m.fd.get();
    } else if (m.at > sent_) {
      stop = m.at;
      break;
    }
  }
  std::size_t used = 0;
  std::uint64_t pos = sent_;
  for (std::size_t i = piece_head_; i < pieces_.size() && used < iov.size() && pos < stop; ++i) {
    const Piece& p = pieces_[i];
    const std::size_t skip = i == piece_head_ ? head_offset_ : 0;
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(p.len - skip, stop - pos));
    iov[used++] = {.iov_base = p.data + skip, .iov_len = len};
    pos += len;
  }
  return used;
}

OutQueue::Counts OutQueue::consume(std::size_t n) noexcept {
  sent_ += n;
  while (!fd_marks_.empty() && fd_marks_.front().at < sent_) fd_marks_.pop_front();  // went out
  while (n > 0) {
    Piece& p = pieces_[piece_head_];
    const std::size_t left = p.len - head_offset_;
    if (n < left) {
      head_offset_ += n;
      break;
    }
    n -= left;
    p.chunk.reset();
    ++piece_head_;
    head_offset_ = 0;
  }
  Counts done;
  while (msg_head_ < msg_ends_.size() && msg_ends_[msg_head_] <= sent_) {
    boundary_ = msg_ends_[msg_head_];
    ++msg_head_;
    ++done.messages;
  }
  while (delivery_head_ < delivery_ends_.size() && delivery_ends_[delivery_head_] <= sent_) {
    ++delivery_head_;
    ++done.deliveries;
  }
  if (empty()) {
    // Nothing queued: give the tail chunk back so an idle session holds no buffer.
    tail_.reset();
    tail_used_ = 0;
  }
  compact();
  return done;
}

OutQueue::Counts OutQueue::discard_unsent() noexcept {
  // Keep the head message if some of its bytes are out; it must be finished.
  std::uint64_t keep_to = sent_;
  std::size_t keep_msgs = msg_head_;
  if (msg_head_ < msg_ends_.size() && sent_ > boundary_) {
    keep_to = msg_ends_[msg_head_];
    keep_msgs = msg_head_ + 1;
  }
  Counts dropped{.messages = msg_ends_.size() - keep_msgs};
  msg_ends_.resize(keep_msgs);
  while (delivery_ends_.size() > delivery_head_ && delivery_ends_.back() > keep_to) {
    delivery_ends_.pop_back();
    ++dropped.deliveries;
  }
  // Cut the pieces at stream position keep_to.
  std::uint64_t pos = sent_ - head_offset_;
  std::size_t i = piece_head_;
  for (; i < pieces_.size() && pos < keep_to; ++i) {
    const std::uint64_t end = pos + pieces_[i].len;
    if (end > keep_to) pieces_[i].len = static_cast<std::size_t>(keep_to - pos);
    pos = std::min(end, keep_to);
  }
  pieces_.erase(pieces_.begin() + static_cast<std::ptrdiff_t>(i), pieces_.end());
  appended_ = keep_to;
  while (!fd_marks_.empty() && fd_marks_.back().at >= keep_to) fd_marks_.pop_back();
  tail_.reset();  // never append behind a cut piece
  tail_used_ = 0;
  compact();
  return dropped;
}

void OutQueue::compact() noexcept {
  if (piece_head_ > 0 && piece_head_ * 2 >= pieces_.size()) {
    pieces_.erase(pieces_.begin(), pieces_.begin() + static_cast<std::ptrdiff_t>(piece_head_));
    piece_head_ = 0;
  }
  if (msg_head_ > 0 && msg_head_ * 2 >= msg_ends_.size()) {
    msg_ends_.erase(msg_ends_.begin(), msg_ends_.begin() + static_cast<std::ptrdiff_t>(msg_head_));
    msg_head_ = 0;
  }
  if (delivery_head_ > 0 && delivery_head_ * 2 >= delivery_ends_.size()) {
    delivery_ends_.erase(delivery_ends_.begin(), delivery_ends_.begin() + static_cast<std::ptrdiff_t>(delivery_head_));
    delivery_head_ = 0;
  }
}

}  // namespace ubroker::broker

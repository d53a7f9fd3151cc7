// Inbox: the read buffer and the reads that fill it (see inbox.hpp).
#include "inbox.hpp"

#include <cstring>

#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"

namespace ubroker::broker {
namespace {

constexpr std::size_t kMinReadRoom = 16 * 1024;

}  // namespace

Inbox::Read Inbox::read(std::uint32_t max_frame) {
  const std::size_t pending = in_ ? end_ - begin_ : 0;
  // Bytes the partial frame at the front needs in all (its prefix was checked already).
  std::size_t need = proto::kPrefixSize;
  if (in_ && pending >= proto::kPrefixSize) {
    auto split = proto::split_frame({in_->data() + begin_, pending}, {.max_frame = max_frame});
    if (split) need = split->frame_size;
  }
  if (!in_ || in_->capacity() - end_ < kMinReadRoom || in_->capacity() - begin_ < need) {
    if (in_ && in_.unique() && in_->capacity() >= need + kMinReadRoom) {
      std::memmove(in_->data(), in_->data() + begin_, pending);
    } else {
      ChunkRef fresh = pool_.acquire(need + kMinReadRoom);
      // The buffer is charged while held; a new one must fit in the uid's budget.
      const std::uint64_t held = account_.used(Resource::kInputBytes);
      if (fresh->capacity() > held && !account_.uid().fits(Resource::kInputBytes, fresh->capacity() - held)) {
        ++account_.uid().limited;
        wanted_ = fresh->capacity();
        return Read::kOverBudget;
      }
      account_.set(Resource::kInputBytes, fresh->capacity());
      if (pending != 0) std::memcpy(fresh->data(), in_->data() + begin_, pending);
      in_ = std::move(fresh);
    }
    begin_ = 0;
    end_ = pending;
  }
  auto got = proto::receive(fd_, {in_->data() + end_, in_->capacity() - end_}, fds_);
  if (!got) {
    if (proto::would_block(got.error())) return Read::kWouldBlock;
    error_ = got.error().message();
    return got.error().category() == proto::transport_category() ? Read::kFdError : Read::kFailed;
  }
  if (got->eof) return Read::kEof;
  const bool drained = got->bytes < in_->capacity() - end_;
  end_ += got->bytes;
  return drained ? Read::kDrained : Read::kSome;
}

void Inbox::consume(std::size_t n) noexcept {
  begin_ += n;
  if (begin_ == end_ && in_.unique()) begin_ = end_ = 0;
}

void Inbox::release_if_idle() noexcept {
  if (!in_ || begin_ != end_) return;
  in_.reset();
  begin_ = end_ = 0;
  account_.set(Resource::kInputBytes, 0);
}

}  // namespace ubroker::broker

// ChunkPool: ownership of every chunk stays in the pool (free_ or live_); ChunkRefs only count.
#include "chunk_pool.hpp"

#include <algorithm>

namespace ubroker::broker {

void ChunkRef::reset() noexcept {
  if (chunk_ != nullptr && --chunk_->refs_ == 0) chunk_->pool_->recycle(chunk_);
  chunk_ = nullptr;
}

ChunkRef ChunkPool::acquire(std::size_t min_size) {
  std::unique_ptr<Chunk> chunk;
  if (min_size <= kStandardSize && !free_.empty()) {
    chunk = std::move(free_.back());
    free_.pop_back();
  } else {
    chunk = std::make_unique<Chunk>(*this, std::max(min_size, kStandardSize));
  }
  Chunk* raw = chunk.get();
  raw->live_index_ = live_.size();
  live_.push_back(std::move(chunk));
  return ChunkRef(raw);
}

void ChunkPool::recycle(Chunk* c) noexcept {
  const std::size_t i = c->live_index_;
  std::unique_ptr<Chunk> owned = std::move(live_[i]);
  if (i + 1 != live_.size()) {
    live_[i] = std::move(live_.back());
    live_[i]->live_index_ = i;
  }
  live_.pop_back();
  if (owned->capacity() == kStandardSize && free_.size() < max_free_) free_.push_back(std::move(owned));
}

}  // namespace ubroker::broker

// Byte chunks for the broker's reads and writes, reference-counted so one received payload
// can sit in many subscribers' outbound queues without a copy. Standard-size chunks recycle
// through a bounded free list, so the steady state allocates nothing per message; a chunk
// larger than standard (one big frame) is freed when its last reference goes.
// Single-threaded: the broker's event loop owns the pool and every ChunkRef.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace ubroker::broker {

class ChunkPool;

class Chunk {
 public:
  Chunk(ChunkPool& pool, std::size_t capacity)
      : pool_(&pool), capacity_(capacity), data_(std::make_unique_for_overwrite<std::byte[]>(capacity)) {}
  [[nodiscard]] std::byte* data() noexcept { return data_.get(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint32_t refs() const noexcept { return refs_; }

 private:
  friend class ChunkRef;
  friend class ChunkPool;
  ChunkPool* pool_;
  std::size_t capacity_;
  std::unique_ptr<std::byte[]> data_;
  std::uint32_t refs_ = 0;
  std::size_t live_index_ = 0;  // position in ChunkPool::live_ while referenced
};

// A counted reference to a Chunk; the chunk goes back to its pool when the last one goes.
class ChunkRef {
 public:
  ChunkRef() noexcept = default;
  ChunkRef(const ChunkRef& o) noexcept : chunk_(o.chunk_) {
    if (chunk_) ++chunk_->refs_;
  }
  ChunkRef(ChunkRef&& o) noexcept : chunk_(std::exchange(o.chunk_, nullptr)) {}
  ChunkRef& operator=(ChunkRef o) noexcept {
    std::swap(chunk_, o.chunk_);
    return *this;
  }
  ~ChunkRef() { reset(); }

  void reset() noexcept;
  [[nodiscard]] Chunk* get() const noexcept { return chunk_; }
  Chunk* operator->() const noexcept { return chunk_; }
  explicit operator bool() const noexcept { return chunk_ != nullptr; }
  [[nodiscard]] bool unique() const noexcept { return chunk_ && chunk_->refs_ == 1; }

 private:
  friend class ChunkPool;
  explicit ChunkRef(Chunk* c) noexcept : chunk_(c) { ++chunk_->refs_; }
  Chunk* chunk_ = nullptr;
};

class ChunkPool {
 public:
  static constexpr std::size_t kStandardSize = 256 * 1024;

  explicit ChunkPool(std::size_t max_free = 64) : max_free_(max_free) {}
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  // A chunk of at least `min_size` bytes (standard size when that is enough).
  [[nodiscard]] ChunkRef acquire(std::size_t min_size = kStandardSize);

  [[nodiscard]] std::size_t live() const noexcept { return live_.size(); }
  [[nodiscard]] std::size_t free_chunks() const noexcept { return free_.size(); }

 private:
  friend class ChunkRef;
  void recycle(Chunk* c) noexcept;

  std::size_t max_free_;
  std::vector<std::unique_ptr<Chunk>> free_;
  // Chunks with references: owned here while ChunkRefs point at them.
  std::vector<std::unique_ptr<Chunk>> live_;
};

}  // namespace ubroker::broker

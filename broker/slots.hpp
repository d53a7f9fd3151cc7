// Index slots in a vector with a free list: a freed slot is reused before the vector grows, so
// the steady state allocates nothing and indices stay small (they travel in tokens).
#pragma once

#include <cstdint>
#include <vector>

namespace ubroker::broker {

template <class T>
[[nodiscard]] std::uint32_t take_slot(std::vector<T>& slots, std::vector<std::uint32_t>& free) {
  if (!free.empty()) {
    const std::uint32_t index = free.back();
    free.pop_back();
    return index;
  }
  slots.emplace_back();
  return static_cast<std::uint32_t>(slots.size() - 1);
}

}  // namespace ubroker::broker

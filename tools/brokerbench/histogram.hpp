// A log-linear latency histogram (HdrHistogram's layout, simplified): values in ns are
// bucketed with about 1% relative precision from 1 ns to ~1 hour, in fixed memory, so
// recording is an index computation and an increment (no allocation while measuring).
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>

namespace ubroker::bench {

class Histogram {
 public:
  static constexpr int kSubBits = 7;  // 128 linear sub-buckets per power of two: <1% error
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kMagnitudes = 42 - kSubBits;  // up to 2^42 ns, about 73 minutes

  void record(std::uint64_t ns) noexcept {
    ++counts_[index(ns)];
    ++total_;
    if (ns > max_) max_ = ns;
  }
  void merge(const Histogram& o) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    if (o.max_ > max_) max_ = o.max_;
  }
  [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return max_; }

  // The value at quantile q (0..1): the upper edge of the bucket holding it.
  [[nodiscard]] std::uint64_t quantile(double q) const noexcept {
    if (total_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_ - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(upper(i), max_);
    }
    return max_;
  }

  // Writes "value_ns,count,cumulative_fraction" for every non-empty bucket.
  void write_csv(std::FILE* out) const {
    std::fprintf(out, "value_ns,count,cumulative\n");
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i] == 0) continue;
      seen += counts_[i];
      std::fprintf(out, "%llu,%llu,%.9f\n", static_cast<unsigned long long>(upper(i)),
                   static_cast<unsigned long long>(counts_[i]),
                   static_cast<double>(seen) / static_cast<double>(total_));
    }
  }

 private:
  static std::size_t index(std::uint64_t v) noexcept {
    if (v < kSub) return static_cast<std::size_t>(v);
    const int magnitude = std::bit_width(v) - kSubBits;  // >= 1
    const auto sub = static_cast<std::size_t>(v >> magnitude) - kSub / 2;
    const std::size_t i = kSub + static_cast<std::size_t>(magnitude - 1) * (kSub / 2) + sub;
    return i < kBuckets ? i : kBuckets - 1;
  }
  static std::uint64_t upper(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::size_t j = i - kSub;
    const int magnitude = static_cast<int>(j / (kSub / 2)) + 1;
    const std::uint64_t sub = j % (kSub / 2) + kSub / 2;
    return ((sub + 1) << magnitude) - 1;
  }
  static constexpr std::size_t kBuckets = kSub + kMagnitudes * (kSub / 2);

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace ubroker::bench

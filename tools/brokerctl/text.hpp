// How brokerctl writes numbers, times, users and payloads for people.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace ubroker::ctl {

std::string user_name(std::uint32_t uid);            // the uid's login name, else the number
std::string clock_time(std::uint64_t unix_ms);       // "2026-11-29 18:21:19", local time
std::string human_bytes(std::uint64_t n);            // "1.5 MiB"
std::string human_duration(std::uint64_t ms);        // "1d 2h 3m 4s"
// A payload on one line: text when it is printable, else hex; cut at `max` bytes ("...").
std::string preview(std::span<const std::byte> p, std::size_t max = 48);

}  // namespace ubroker::ctl

// brokerctl's words for numbers, times, users and payloads (text.hpp).
#include "text.hpp"

#include <pwd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <sstream>

namespace ubroker::ctl {

std::string user_name(std::uint32_t uid) {
  if (const passwd* pw = ::getpwuid(uid)) return pw->pw_name;
  return std::to_string(uid);
}

std::string clock_time(std::uint64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string human_bytes(std::uint64_t n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
  return buf;
}

std::string human_duration(std::uint64_t ms) {
  const std::uint64_t s = ms / 1000;
  std::ostringstream o;
  if (s >= 86400) o << s / 86400 << "d ";
  if (s >= 3600) o << (s / 3600) % 24 << "h ";
  if (s >= 60) o << (s / 60) % 60 << "m ";
  o << s % 60 << "s";
  return o.str();
}

// Printable payload preview: text when it is text, else hex.
std::string preview(std::span<const std::byte> p, std::size_t max) {
  bool text = true;
  for (auto b : p) {
    const auto c = std::to_integer<unsigned char>(b);
    if ((c < 0x20 && c != '\t') || c >= 0x7f) text = false;
  }
  std::string out;
  const std::size_t n = std::min(p.size(), max);
  if (text) {
    out.assign(reinterpret_cast<const char*>(p.data()), n);
  } else {
    static const char* hex = "0123456789abcdef";
    for (std::size_t i = 0; i < n; ++i) {
      const auto c = std::to_integer<unsigned char>(p[i]);
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (p.size() > max) out += "...";
  return out;
}

}  // namespace ubroker::ctl

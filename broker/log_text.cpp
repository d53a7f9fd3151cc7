// escape_for_log, printable (see log_text.hpp).
#include "log_text.hpp"

namespace ubroker::broker {
namespace {

bool is_printable(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u < 0x7f;
}

}  // namespace

std::string escape_for_log(std::string_view text, std::size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  const bool cut = text.size() > max;
  if (cut) text = text.substr(0, max);
  std::string out;
  out.reserve(text.size() + 8);
  for (const char c : text) {
    if (is_printable(c) && c != '\\') {
      out.push_back(c);
      continue;
    }
    const auto u = static_cast<unsigned char>(c);
    out += "\\x";
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xf]);
  }
  if (cut) out += "...";
  return out;
}

std::string printable(std::string_view text, std::size_t max) {
  std::string out(text.substr(0, max));
  for (char& c : out) {
    if (!is_printable(c)) c = '?';
  }
  return out;
}

}  // namespace ubroker::broker

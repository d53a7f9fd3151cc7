// Message headers: checks and encoding (see headers.hpp).
#include "headers.hpp"

#include <fmt/format.h>

#include "ubroker/proto/headers.hpp"

namespace ubroker::detail {

Result<void> encode_headers(std::span<const HeaderField> fields, std::vector<std::byte>& out) {
  out.clear();
  std::size_t size = 0;
  for (const HeaderField& f : fields) {
    if (const char* why = proto::check_header_field(f.key, f.value)) {
      return std::unexpected(Error{Errc::kInvalidHeaders, fmt::format("header '{}': {}", f.key, why)});
    }
    if (f.key.starts_with(proto::kBrokerHeaderPrefix)) {
      return std::unexpected(
          Error{Errc::kInvalidHeaders, fmt::format("header '{}': keys that start with 'ubroker-' are the broker's", f.key)});
    }
    size += proto::header_field_size(f.key, f.value);
  }
  if (size > proto::kMaxHeaderBytes) {
    return std::unexpected(Error{Errc::kInvalidHeaders, fmt::format("headers take {} bytes encoded; at most {} may",
                                                                    size, proto::kMaxHeaderBytes)});
  }
  out.resize(size);
  std::byte* p = out.data();
  for (const HeaderField& f : fields) p = proto::put_header_field(p, f.key, f.value);
  return {};
}

bool take_headers(const wire::Header& h, std::vector<std::byte>& out) {
  out.clear();
  if (!h.has_headers()) return true;
  const auto size = h.headers().ByteSizeLong();
  if (size > proto::kMaxHeaderBytes) return false;
  out.resize(size);
  (void)h.headers().SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(out.data()));
  return proto::check_headers(out) == nullptr;
}

std::string utf8_or_replaced(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const end = p + text.size();
  while (p < end) {
    const unsigned c = *p;
    std::size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 4;
    bool ok = n < 4 && static_cast<std::size_t>(end - p) > n;
    unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
    for (std::size_t i = 1; ok && i <= n; ++i) {
      ok = (p[i] & 0xc0) == 0x80;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    static constexpr unsigned kMin[] = {0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMin[n] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    if (!ok) {
      out.push_back('?');
      ++p;
      continue;
    }
    out.append(reinterpret_cast<const char*>(p), n + 1);
    p += n + 1;
  }
  return out;
}

}  // namespace ubroker::detail

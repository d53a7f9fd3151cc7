// Message headers: checks and encoding (see headers.hpp).
#include "headers.hpp"

#include <fmt/format.h>

#include "ubroker/proto/headers.hpp"
#include "ubroker/proto/utf8.hpp"

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
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    const std::size_t n = proto::utf8_sequence(text, i, cp);
    if (n == 0) {
      out.push_back('?');
      ++i;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace ubroker::detail

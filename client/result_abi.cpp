// The C++20 side of the API's one ABI (result.hpp): the library is built as C++23, where
// Result is std::expected, and serves programs built as C++20, where it is detail::Expected.
// Functions that return a Result are the same symbols either way (a return type is not part
// of a mangled name) and only need the same layout, checked here; a Result inside a parameter
// type changes the symbol, so request_async has a second entry point.
#include <cstddef>
#include <expected>
#include <utility>

#include "ubroker/client.hpp"

namespace ubroker {
namespace {

template <class T>
constexpr bool same_layout = sizeof(std::expected<T, Error>) == sizeof(detail::Expected<T, Error>) &&
                             alignof(std::expected<T, Error>) == alignof(detail::Expected<T, Error>);

static_assert(same_layout<void> && same_layout<Client> && same_layout<Message> && same_layout<Subscription> &&
                  same_layout<Loan> && same_layout<std::uint64_t>,
              "detail::Expected must have std::expected's layout (ubroker/result.hpp)");

}  // namespace

namespace detail {

void request_async_expected(Client& client, std::string_view topic, std::span<const std::byte> payload,
                            std::chrono::milliseconds timeout, std::span<const HeaderField> headers,
                            std::function<void(Expected<Message, Error>)> done) {
  const RequestOptions options{.timeout = timeout, .headers = headers};
  client.request_async(topic, payload, options, [done = std::move(done)](Result<Message> reply) {
    if (reply) {
      done(Expected<Message, Error>(std::move(*reply)));
    } else {
      done(Expected<Message, Error>(Unexpected<Error>(std::move(reply.error()))));
    }
  });
}

}  // namespace detail
}  // namespace ubroker

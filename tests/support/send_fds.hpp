// One sendmsg of bytes with any number of fds attached (SCM_RIGHTS). proto::send refuses
// more fds than a frame may carry; tests and the hostile client need to send more, or fds on
// frames that must not have them. No GoogleTest here: the hostile client links it too.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>

namespace ubroker::test {

// Returns what sendmsg returned (MSG_NOSIGNAL: a closed peer is -1 with EPIPE).
ssize_t sendmsg_with_fds(int socket, std::span<const std::byte> bytes, std::span<const int> fds);

}  // namespace ubroker::test

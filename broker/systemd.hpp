// brokerd under systemd: the listening socket systemd may pass (socket activation, as
// sd_listen_fds(3)), the readiness protocol (sd_notify(3): READY, RELOADING, STOPPING), and
// whether stderr goes to the journal. Without systemd each is a no-op or "no". Main thread.
#pragma once

#include <expected>
#include <optional>
#include <string>

#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::broker {

struct InheritedListener {
  shm::UniqueFd fd;  // listening, non-blocking, close-on-exec
  std::string name;  // its path, or "@name" for an abstract socket
};

// The listening socket passed by systemd, if any (and LISTEN_* removed from the environment).
// Refused with a sentence: more than one fd, or one that is not a listening AF_UNIX
// SOCK_STREAM socket.
[[nodiscard]] std::expected<std::optional<InheritedListener>, std::string> take_inherited_listener();

// Tells systemd the broker's state ("READY=1", "STOPPING=1", ...) when it asked to be told
// ($NOTIFY_SOCKET); a failure to tell it is logged once, never fatal.
void notify_systemd(const std::string& state);
void notify_ready();
void notify_reloading();  // RELOADING=1 with the MONOTONIC_USEC systemd asks for
void notify_stopping();

// True when stderr is the journal's stream ($JOURNAL_STREAM names its device and inode).
[[nodiscard]] bool stderr_is_journal();

}  // namespace ubroker::broker

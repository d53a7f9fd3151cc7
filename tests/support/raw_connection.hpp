// A raw, protocol-level connection for tests that must send what the client library never
// would: garbage, truncated and oversized frames, frames out of order.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "send_fds.hpp"
#include "ubroker.pb.h"
#include "ubroker/shm/unique_fd.hpp"

namespace ubroker::test {


class RawConnection {
 public:
  explicit RawConnection(const std::string& address);

  void send_bytes(std::span<const std::byte> bytes);
  void send_text(std::string_view text);
  void send_frame(const wire::Header& h, std::string_view payload = {});
  // The frame in one sendmsg with `fds` attached (SCM_RIGHTS); false if it did not all go.
  bool send_frame_with_fds(const wire::Header& h, std::span<const int> fds);
  // HELLO (offering `features`, e.g. shm::kLaneFeature), then expects WELCOME.
  void hello(const std::string& name = "raw", const std::vector<std::string>& features = {});
  // SUBSCRIBE (seq = id) to `pattern`, then expects its ACK.
  void subscribe(std::uint64_t id, const std::string& pattern, wire::Overflow overflow = wire::BLOCK);

  // The next frame, or nullopt on EOF or timeout (eof() tells which).
  std::optional<wire::Header> read_frame(std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                         std::string* payload = nullptr);
  // True when the broker closed the connection (reads until EOF, skipping frames).
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  [[nodiscard]] bool eof() const noexcept { return eof_; }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Fds that arrived with the frames read so far, in order.
  std::vector<shm::UniqueFd>& received_fds() noexcept { return fds_; }

 private:
  shm::UniqueFd fd_;
  std::vector<std::byte> buf_;
  std::vector<shm::UniqueFd> fds_;
  bool eof_ = false;
};

}  // namespace ubroker::test

// RawConnection: blocking-with-poll socket I/O and the frame codec.
#include "raw_connection.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "ubroker/proto/fd_socket.hpp"
#include "ubroker/proto/frame_codec.hpp"
#include "ubroker/proto/socket_address.hpp"

namespace ubroker::test {

RawConnection::RawConnection(const std::string& address) {
  const auto addr = proto::make_socket_address(address).value();
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(fd_.get(), addr.get(), addr.len), 0) << std::strerror(errno);
}

void RawConnection::send_bytes(std::span<const std::byte> bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;  // the broker may have closed on us; the test checks what it expects
    off += static_cast<std::size_t>(n);
  }
}

void RawConnection::send_text(std::string_view text) {
  send_bytes(std::as_bytes(std::span(text.data(), text.size())));
}

void RawConnection::send_frame(const wire::Header& h, std::string_view payload) {
  std::vector<std::byte> b(proto::frame_head_size(h) + payload.size());
  const std::size_t head = proto::write_frame_head(b.data(), h, payload.size());
  if (!payload.empty()) std::memcpy(b.data() + head, payload.data(), payload.size());
  send_bytes(b);
}


bool RawConnection::send_frame_with_fds(const wire::Header& h, std::span<const int> fds) {
  std::vector<std::byte> b(proto::frame_head_size(h));
  proto::write_frame_head(b.data(), h, 0);
  const iovec iov{.iov_base = b.data(), .iov_len = b.size()};
  auto sent = proto::send(fd_.get(), std::span(&iov, 1), fds);
  return sent && *sent == b.size();
}

void RawConnection::hello(const std::string& name, const std::vector<std::string>& features) {
  wire::Header h;
  h.set_type(wire::HELLO);
  h.mutable_hello()->set_protocol_version(proto::kProtocolVersion);
  h.mutable_hello()->set_client_name(name);
  for (const auto& f : features) h.mutable_hello()->add_features(f);
  send_frame(h);
  auto w = read_frame();
  ASSERT_TRUE(w.has_value());
  ASSERT_EQ(w->type(), wire::WELCOME);
}

void RawConnection::subscribe(std::uint64_t id, const std::string& pattern, wire::Overflow overflow) {
  wire::Header h;
  h.set_type(wire::SUBSCRIBE);
  h.set_seq(id);
  h.add_sub_ids(id);
  h.set_topic(pattern);
  h.set_overflow(overflow);
  send_frame(h);
  auto ack = read_frame();
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->type(), wire::ACK) << ack->DebugString();
}

std::optional<wire::Header> RawConnection::read_frame(std::chrono::milliseconds timeout, std::string* payload) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto split = proto::split_frame(buf_, {.max_frame = 1u << 30});
    if (split && split->complete) {
      wire::Header h;
      if (!proto::parse_header(split->header, h)) return std::nullopt;
      if (payload) payload->assign(reinterpret_cast<const char*>(split->payload.data()), split->payload.size());
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(split->frame_size));
      return h;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    std::byte tmp[65536];
    auto got = proto::receive(fd_.get(), tmp, fds_);
    if (!got && proto::would_block(got.error())) continue;
    if (!got || got->eof) {
      eof_ = true;
      return std::nullopt;
    }
    buf_.insert(buf_.end(), tmp, tmp + got->bytes);
  }
}

bool RawConnection::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!eof_ && std::chrono::steady_clock::now() < deadline) {
    (void)read_frame(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  }
  return eof_;
}

}  // namespace ubroker::test

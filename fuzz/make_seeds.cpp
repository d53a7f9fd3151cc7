// Writes the seed corpus (fuzz/corpus/TARGET/*) with the real codec, so seeds stay valid as
// the protocol grows: fuzz_make_seeds DIR. The files are committed; rerun after a protocol
// change and commit what changed.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ubroker.pb.h"
#include "ubroker/proto/frame_codec.hpp"

namespace {

using namespace ubroker;

std::string frame(const wire::Header& h, const std::string& payload = {}) {
  std::string out(proto::frame_head_size(h), '\0');
  proto::write_frame_head(reinterpret_cast<std::byte*>(out.data()), h, payload.size());
  return out + payload;
}

wire::Header hello() {
  wire::Header h;
  h.set_type(wire::HELLO);
  h.mutable_hello()->set_protocol_version(proto::kProtocolVersion);
  h.mutable_hello()->set_client_name("seed");
  return h;
}

wire::Header typed(wire::FrameType type, const std::string& topic, std::uint64_t seq = 0, std::uint64_t sub = 0) {
  wire::Header h;
  h.set_type(type);
  h.set_topic(topic);
  h.set_seq(seq);
  if (sub != 0) h.add_sub_ids(sub);
  return h;
}

// A session's worth of client frames: the broker's handshake and the frames after it.
std::string session() {
  auto retained = typed(wire::PUBLISH, "a.r");
  retained.set_retain(true);
  auto request = typed(wire::REQUEST, "svc.x", 5);
  request.set_timeout_ms(100);
  auto release = typed(wire::SHM_RELEASE, "");
  release.add_releases(0x100000001ull);
  return frame(hello()) + frame(typed(wire::SUBSCRIBE, "a.*", 1, 1)) + frame(typed(wire::PUBLISH, "a.b"), "hello") +
         frame(retained, "kept") + frame(typed(wire::SERVE, "svc.>", 2, 2)) + frame(request, "q") +
         frame(typed(wire::REQUEST, "$sys.admin.status", 6)) + frame(typed(wire::PROBE, "svc.x", 7)) +
         frame(typed(wire::PING, "", 8)) + frame(release) + frame(typed(wire::UNSUBSCRIBE, "", 9, 1));
}

void write(const std::filesystem::path& dir, const std::string& name, const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root = argv[1];
  wire::Header welcome;
  welcome.set_type(wire::WELCOME);
  welcome.mutable_welcome()->set_client_id(7);
  welcome.mutable_welcome()->set_protocol_version(proto::kProtocolVersion);
  welcome.mutable_welcome()->mutable_limits()->set_max_frame_bytes(1 << 20);
  wire::Header error;
  error.set_type(wire::ERROR);
  error.mutable_error()->set_code(wire::PERMISSION_DENIED);
  error.mutable_error()->set_message("denied");
  error.mutable_error()->set_fatal(true);
  auto shm = typed(wire::SHM_REGISTER, "", 3);
  shm.set_fd_count(1);
  shm.mutable_shm()->set_segment(1);

  write(root / "fuzz_frame_decoder", "hello", frame(hello()));
  write(root / "fuzz_frame_decoder", "session", session());
  write(root / "fuzz_frame_decoder", "welcome-error", frame(welcome) + frame(error));
  write(root / "fuzz_frame_decoder", "shm-register", frame(shm));

  write(root / "fuzz_handshake", "session", std::string(1, '\0') + session());
  write(root / "fuzz_handshake", "session-split", std::string(1, '\x10') + session());
  write(root / "fuzz_handshake", "hello-only", std::string(1, '\x02') + frame(hello()));
  write(root / "fuzz_handshake", "no-hello", std::string(1, '\0') + frame(typed(wire::PUBLISH, "a.b"), "x"));
  write(root / "fuzz_handshake", "answer-welcome", std::string(1, '\x01') + frame(welcome));
  write(root / "fuzz_handshake", "answer-error", std::string(1, '\x01') + frame(error));

  wire::BrokerStatus status;
  status.set_version("0.1.0");
  (*status.mutable_errors_sent())["PERMISSION_DENIED"] = 3;
  wire::ClientList clients;
  clients.add_clients()->set_name("a");
  write(root / "fuzz_header_messages", "header", std::string(1, '\0') + typed(wire::PUBLISH, "a.b", 1, 2).SerializeAsString());
  write(root / "fuzz_header_messages", "status", std::string(1, '\1') + status.SerializeAsString());
  write(root / "fuzz_header_messages", "clients", std::string(1, '\2') + clients.SerializeAsString());
  write(root / "fuzz_header_messages", "topics", std::string(1, '\x09') + "a.*\na.b\na.b");
  write(root / "fuzz_header_messages", "topics-wide", std::string(1, '\x09') + ">\n*.b.>\nx.b.c");
  write(root / "fuzz_header_messages", "topics-sys", std::string(1, '\x09') + "$sys.>\n$sys.client.*\n$sys.client.up");
  return 0;
}

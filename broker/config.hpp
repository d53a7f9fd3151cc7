// The broker's settings: defaults, the TOML config file, then command-line overrides.
// Every setting has a sane default; unknown keys and bad values are errors naming the key and
// its line. Read once at start-up on the main thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <expected>
#include <string>

#include "policy.hpp"

namespace ubroker::broker {

// Every resource a client can make the broker hold has a limit here, per client, per uid or
// both; docs/security.md has the table (what each bounds, its default, who pays, what
// happens at the limit). Per-uid limits are what one local user can make the broker hold in
// all; the defaults keep a broker of the documented size (a few dozen uids) within a few
// GiB even when each uid pushes every limit at once.
struct Limits {
  std::uint32_t max_frame_bytes = 1u << 20;  // bytes after the 8-byte prefix
  std::uint32_t max_subscriptions = 4096;    // per client
  // Subscriptions and services of one uid, at their real cost (the pattern, the subscription
  // and one topic-index node per token): a pattern of many one-byte tokens costs its due.
  std::uint64_t subscription_max_bytes_per_uid = 64u << 20;
  std::uint32_t queue_max_messages = 16384;  // per client outbound queue
  std::uint64_t queue_max_bytes = 8u << 20;  // per client outbound queue
  std::uint32_t max_connections = 16384;
  std::uint32_t max_connections_per_uid = 4096;
  // All of one uid's outbound queues together: a uid whose clients do not read holds back
  // (or drops for) only its own subscriptions, never another uid's.
  std::uint64_t queue_max_bytes_per_uid = 256u << 20;
  // Read buffers of one uid's connections (frames partly received, or held back behind a full
  // receiver): beyond it, a connection that needs a larger buffer is cut off.
  std::uint64_t input_max_bytes_per_uid = 64u << 20;
  std::uint32_t max_pending_requests = 4096;              // per client, waiting for replies
  std::uint32_t max_pending_requests_per_uid = 65536;     // all of one uid's clients
  std::chrono::milliseconds request_timeout_max{300000};  // cap on (and default for) a request's deadline
  std::uint64_t retained_max_bytes = 64u << 20;           // all retained messages together, real cost
  std::uint64_t retained_max_bytes_per_uid = 16u << 20;   // the retained values one uid published
  // Shared memory (bulk payloads). A segment counts against its owner's uid until its last
  // reader lets go, which may be after the owner has disconnected.
  std::uint64_t shm_max_segment_bytes = 1ull << 30;  // one segment (0: no shared memory at all)
  std::uint64_t shm_max_bytes_per_uid = 4ull << 30;  // all of one uid's segments together
  std::uint32_t shm_max_segments_per_uid = 64;
  std::uint32_t shm_max_segments_per_client = 8;
  // Segment fds passed (queued or sent) to one uid's clients for segments still alive: bounds
  // the fds a uid's receivers can keep in flight in the broker's queues and socket buffers.
  std::uint32_t shm_max_fds_in_flight_per_uid = 1024;
  // Bulk deliveries a receiver has not released yet; beyond, further ones are dropped for it
  // and counted (each held delivery pins a record and the publisher's space in its segment).
  std::uint32_t shm_max_holds_per_client = 16384;
  std::uint32_t shm_max_holds_per_uid = 262144;

  friend bool operator==(const Limits&, const Limits&) = default;
};

struct Timeouts {
  std::chrono::milliseconds handshake{5000};      // Hello must arrive within this
  std::chrono::milliseconds slow_consumer{5000};  // full queue without progress -> disconnect
  std::chrono::milliseconds shutdown{3000};       // flush deadline on SIGTERM/SIGINT
  std::chrono::milliseconds linger{1000};         // flush deadline for a final error frame
  std::chrono::milliseconds frame{10000};         // a frame must arrive whole within this of its first byte

  friend bool operator==(const Timeouts&, const Timeouts&) = default;
};

// Direct lanes (lanes.hpp): publisher to subscriber through shared memory.
struct LaneSettings {
  bool enabled = true;
  // Each lane's ring (a power of two, 4 KiB..1 GiB): 1 MiB holds ~30,000 small messages, what
  // a subscriber's queue in the broker holds, so a publisher is held back no sooner.
  std::uint64_t capacity_bytes = 1u << 20;
  std::uint32_t max_per_client = 64;           // lanes one connection is an end of
  // A topic goes by lane to at most this many subscriber connections; one that more receive
  // goes through the broker to all of them: its fan-out on its own core beats the publisher
  // writing every copy itself (docs/performance.md). 0: no lanes at all.
  std::uint32_t max_fanout = 2;
  std::uint64_t max_bytes_per_uid = 1ull << 30;  // the segments of one uid's lanes (both ends charged)

  friend bool operator==(const LaneSettings&, const LaneSettings&) = default;
};

struct Config {
  std::string socket_path;  // empty: the default (see proto/socket_address.hpp)
  mode_t socket_mode = 0660;
  std::string socket_group;  // empty: the broker's own group
  gid_t socket_gid = 0;      // socket_group, resolved
  std::string log_level = "info";
  // After the event loop runs out of ready work, it keeps checking for more for this long
  // before it sleeps in epoll_wait: a message arriving meanwhile skips the wake-up, at the
  // cost of the CPU spent checking (docs/performance.md measures both). 0: sleep at once.
  std::chrono::microseconds busy_poll{0};
  std::string config_file;  // where the settings came from ("" = defaults only)
  Limits limits;
  Timeouts timeouts;
  LaneSettings lanes;
  Policy policy;
};

// Parses a TOML config file into `config` (keys absent keep their current value).
[[nodiscard]] std::expected<void, std::string> load_config_file(const std::string& path, Config& config);

// Checks relations between settings (e.g. a frame must fit in a queue).
[[nodiscard]] std::expected<void, std::string> validate(const Config& config);

}  // namespace ubroker::broker

// brokerctl top: a live view of the broker, refreshed every interval: its totals and rates,
// then the busiest clients and topics. On a terminal the screen is redrawn in place and keys
// act at once (q quits, s changes the clients' order: rate, queue, memory); elsewhere each
// refresh is printed after the previous one, for a log or a test. Rates are the differences
// between two refreshes, so the first screen shows totals and the rates follow.
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "table.hpp"
#include "text.hpp"

namespace ubroker::ctl {
namespace {

using namespace std::chrono_literals;

// Standard input in the terminal's non-canonical mode (keys arrive at once, unechoed) for
// as long as this lives; the mode it had is put back however top ends.
class RawKeys {
 public:
  RawKeys() {
    if (!::isatty(STDIN_FILENO) || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  RawKeys(const RawKeys&) = delete;
  RawKeys& operator=(const RawKeys&) = delete;
  ~RawKeys() {
    if (active_) (void)::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  // Waits up to `timeout` for a key; the key, or nullopt when none came (or stdin is no terminal).
  std::optional<char> wait(std::chrono::milliseconds timeout) const {
    pollfd p{.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
    if (!active_) {
      ::poll(nullptr, 0, static_cast<int>(timeout.count()));  // interrupted by Ctrl-C: returns early
      return std::nullopt;
    }
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char c = 0;
    if (::read(STDIN_FILENO, &c, 1) != 1) return std::nullopt;
    return c;
  }

 private:
  termios saved_{};
  bool active_ = false;
};

enum class ClientOrder { kRate, kQueue, kMemory };
constexpr const char* kOrderNames[] = {"rate", "queue", "memory"};

struct Snapshot {
  wire::BrokerStatus status;
  wire::ClientList clients;
  wire::TopicList topics;
  std::chrono::steady_clock::time_point at;
};

// Rows the terminal has (24 when it is no terminal or does not say).
int screen_rows() {
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_row > 0) return w.ws_row;
  return 24;
}

std::string rate(double per_second) {
  return per_second < 10 ? fmt::format("{:.1f}", per_second) : fmt::format("{:.0f}", per_second);
}

void draw(const Snapshot& now, const Snapshot* before, ClientOrder order, bool terminal) {
  const double seconds =
      before == nullptr ? 0 : std::chrono::duration<double>(now.at - before->at).count();
  auto per_second = [&](std::uint64_t a, std::uint64_t b) {
    return seconds <= 0 || a < b ? 0.0 : static_cast<double>(a - b) / seconds;
  };
  const auto& st = now.status;
  std::string out;
  if (terminal) out += "\033[H\033[2J";  // home, clear
  out += fmt::format("brokerd {}  pid {}  up {}  {}\n", st.version(), st.pid(), human_duration(st.uptime_ms()),
                     clock_time(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                               std::chrono::system_clock::now().time_since_epoch())
                                                               .count())));
  const auto& prev = before != nullptr ? before->status : st;
  out += fmt::format(
      "connections {}  subscriptions {}  in {} msg/s  out {} msg/s  lanes {} ({} msg/s)  requests {}/s  errors {}  "
      "dropped {}  memory {} (rss {})\n",
      st.connections(), st.subscriptions(), rate(per_second(st.messages_in(), prev.messages_in())),
      rate(per_second(st.deliveries_written(), prev.deliveries_written())), st.lanes_open(),
      rate(per_second(st.lane_delivered(), prev.lane_delivered())),
      rate(per_second(st.requests(), prev.requests())), st.error_replies() + st.request_timeouts(),
      st.dropped_overflow() + st.dropped_disconnect() + st.bulk_dropped_fds() + st.bulk_dropped_holds() +
          st.lane_dropped(),
      human_bytes(st.memory_bytes()), human_bytes(st.rss_bytes()));
  std::fputs(out.c_str(), stdout);

  // Clients, busiest first by the chosen order.
  std::map<std::uint64_t, const wire::ClientInfo*> earlier;
  if (before != nullptr) {
    for (const auto& c : before->clients.clients()) earlier[c.client_id()] = &c;
  }
  struct Row {
    const wire::ClientInfo* c;
    double in, out;
  };
  std::vector<Row> rows;
  for (const auto& c : now.clients.clients()) {
    const auto it = earlier.find(c.client_id());
    const wire::ClientInfo* e = it == earlier.end() ? nullptr : it->second;
    // What it sent and received, through the broker and by its lanes.
    rows.push_back({&c, e ? per_second(c.messages_in() + c.lane_messages_out(), e->messages_in() + e->lane_messages_out()) : 0.0,
                    e ? per_second(c.messages_out() + c.lane_messages_in(), e->messages_out() + e->lane_messages_in()) : 0.0});
  }
  std::sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    switch (order) {
      case ClientOrder::kQueue: return a.c->queued_bytes() > b.c->queued_bytes();
      case ClientOrder::kMemory: return a.c->memory_bytes() > b.c->memory_bytes();
      case ClientOrder::kRate: break;
    }
    return a.in + a.out > b.in + b.out;
  });
  // Half of what is left of the screen each for clients and topics (a header and a title each).
  const int room = std::max(2, (screen_rows() - 6) / 2 - 1);
  std::printf("\nclients by %s (s: change order, q: quit)\n", kOrderNames[static_cast<int>(order)]);
  Table clients({"ID", "NAME", "USER", "IN/S", "OUT/S", "QUEUED", "DROPS", "MEMORY", "SUBS", "REQS", "ERR REPLIES"});
  for (int i = 0; i < room && i < static_cast<int>(rows.size()); ++i) {
    const auto& c = *rows[static_cast<std::size_t>(i)].c;
    clients.add({std::to_string(c.client_id()), c.name().empty() ? "-" : c.name(), user_name(c.uid()),
                 rate(rows[static_cast<std::size_t>(i)].in), rate(rows[static_cast<std::size_t>(i)].out),
                 human_bytes(c.queued_bytes()), std::to_string(c.dropped()), human_bytes(c.memory_bytes()),
                 std::to_string(c.subscriptions() + c.services()), std::to_string(c.requests()),
                 std::to_string(c.error_replies())});
  }
  clients.print(stdout);

  // Topics by their recent rate (the broker's own smoothing), then by requests.
  std::vector<const wire::TopicInfo*> topics;
  for (const auto& t : now.topics.topics()) topics.push_back(&t);
  std::sort(topics.begin(), topics.end(), [](const auto* a, const auto* b) {
    return a->rate() != b->rate() ? a->rate() > b->rate() : a->requests() > b->requests();
  });
  std::printf("\ntopics by rate\n");
  Table table({"TOPIC", "RATE/S", "MESSAGES", "SUBSCRIBERS", "REQUESTS", "ERRORS", "TIMEOUTS"});
  for (int i = 0; i < room && i < static_cast<int>(topics.size()); ++i) {
    const auto& t = *topics[static_cast<std::size_t>(i)];
    table.add({t.topic(), rate(t.rate()), std::to_string(t.messages()), std::to_string(t.subscribers()),
               std::to_string(t.requests()), std::to_string(t.errors()), std::to_string(t.timeouts())});
  }
  table.print(stdout);
  std::fflush(stdout);
}

}  // namespace

int cmd_top(Context& ctx, std::chrono::milliseconds interval, std::uint64_t count) {
  if (auto e = ctx.connect("brokerctl-top")) return *e;
  const bool terminal = ::isatty(STDOUT_FILENO) != 0;
  RawKeys keys;
  ClientOrder order = ClientOrder::kRate;
  std::optional<Snapshot> before, older;  // the last two refreshes: rates are their difference
  for (std::uint64_t frame = 0; count == 0 || frame < count; ++frame) {
    Snapshot now;
    if (auto e = ctx.admin("status", now.status)) return *e;
    if (auto e = ctx.admin_list("clients", now.clients)) return *e;
    if (auto e = ctx.admin_list("topics", now.topics)) return *e;
    now.at = std::chrono::steady_clock::now();
    draw(now, before ? &*before : nullptr, order, terminal);
    if (!terminal) std::printf("\n");
    if (std::ferror(stdout)) return kOk;  // the reader went away
    older = std::move(before);
    before = std::move(now);
    if (count != 0 && frame + 1 == count) break;
    // Keys act at once: a key redraws now (s) or ends (q); otherwise the interval runs out.
    const auto until = std::chrono::steady_clock::now() + interval;
    for (;;) {
      if (g_interrupted) return kOk;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left <= 0ms) break;
      const auto key = keys.wait(std::min<std::chrono::milliseconds>(left, 200ms));
      if (!key) continue;
      if (*key == 'q' || *key == 'Q') return kOk;
      if (*key == 's' || *key == 'S') {
        order = static_cast<ClientOrder>((static_cast<int>(order) + 1) % 3);
        draw(*before, older ? &*older : nullptr, order, terminal);
      }
    }
  }
  return kOk;
}

}  // namespace ubroker::ctl

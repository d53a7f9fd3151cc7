// Presence: the broker announces clients and services coming and going on $sys. topics,
// with the identity the kernel gave it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <vector>

#include "broker_process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

struct Event {
  std::string topic;
  wire::ClientEvent client;
  std::string service;
};

class Watcher {
 public:
  explicit Watcher(BrokerProcess& broker) : client_(broker.connect("watcher")) {
    sub_ = std::move(
        client_
            .subscribe("$sys.>",
                       [this](const MessageView& m) {
                         Event e{.topic = std::string(m.topic), .client = {}, .service = {}};
                         if (m.topic.starts_with("$sys.service.")) {
                           wire::ServiceEvent se;
                           EXPECT_TRUE(se.ParseFromArray(m.payload.data(), static_cast<int>(m.payload.size())));
                           e.client = se.client();
                           e.service = se.topic();
                         } else {
                           EXPECT_TRUE(e.client.ParseFromArray(m.payload.data(), static_cast<int>(m.payload.size())));
                         }
                         EXPECT_EQ(m.sender.client_id, 0u);  // from the broker itself
                         std::lock_guard lk(mu_);
                         events_.push_back(std::move(e));
                       })
            .value());
  }
  // The first event on `topic` about a client named `name`, waiting for it.
  std::optional<Event> find(const std::string& topic, const std::string& name) {
    std::optional<Event> found;
    eventually(
        [&] {
          std::lock_guard lk(mu_);
          for (const auto& e : events_) {
            if (e.topic == topic && e.client.name() == name) found = e;
          }
          return found.has_value();
        },
        std::chrono::seconds(10));
    return found;
  }

 private:
  // Declared before the client: destroyed after it, so no callback can outlive them.
  std::mutex mu_;
  std::vector<Event> events_;
  Client client_;
  Subscription sub_;
};

TEST(Presence, ConnectAndDisconnectOfAnotherProcessWithItsIdentity) {
  BrokerProcess broker;
  Watcher watcher(broker);
  Process peer = publish_from_peer(broker, "x", 1, 16, 5);
  auto st = peer.wait(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0);
  auto up = watcher.find("$sys.client.connected", "test-peer-5");
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->client.pid(), static_cast<std::uint32_t>(peer.pid()));
  EXPECT_EQ(up->client.uid(), ::getuid());
  EXPECT_EQ(up->client.gid(), ::getgid());
  EXPECT_NE(up->client.client_id(), 0u);
  auto down = watcher.find("$sys.client.disconnected", "test-peer-5");
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->client.client_id(), up->client.client_id());
  EXPECT_EQ(down->client.pid(), static_cast<std::uint32_t>(peer.pid()));
}

TEST(Presence, KilledClientAndItsServicesAreAnnounced) {
  BrokerProcess broker;
  Watcher watcher(broker);
  Process server = serve_from_peer(broker, "billing.>", "hang");
  ASSERT_TRUE(wait_for_output(server, "ready")) << server.err();
  auto up = watcher.find("$sys.service.up", "test-peer-serve");
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->service, "billing.>");
  EXPECT_EQ(up->client.pid(), static_cast<std::uint32_t>(server.pid()));
  server.signal(SIGKILL);
  auto down = watcher.find("$sys.service.down", "test-peer-serve");
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->service, "billing.>");
  auto gone = watcher.find("$sys.client.disconnected", "test-peer-serve");
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(gone->client.pid(), static_cast<std::uint32_t>(server.pid()));
}

TEST(Presence, ServiceUpAndDownOnUnserve) {
  BrokerProcess broker;
  Watcher watcher(broker);
  Client server = broker.connect("svc");
  auto s = server.serve("inventory.lookup", [](Request r) { (void)r.reply("ok"); });
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(watcher.find("$sys.service.up", "svc").has_value());
  ASSERT_TRUE(s->unsubscribe().has_value());
  auto down = watcher.find("$sys.service.down", "svc");
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->service, "inventory.lookup");
  EXPECT_EQ(down->client.client_id(), server.id());
}

}  // namespace
}  // namespace ubroker::test

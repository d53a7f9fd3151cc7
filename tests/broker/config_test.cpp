// Config files: defaults, values, and errors that name the key and line.
#include "config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace ubroker::broker {
namespace {

std::string write_temp(const std::string& text) {
  char path[] = "/tmp/ubroker-config-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(Config, Defaults) {
  Config c;
  EXPECT_TRUE(validate(c).has_value());
  EXPECT_EQ(c.timeouts.slow_consumer, std::chrono::milliseconds(5000));
  EXPECT_EQ(c.busy_poll, std::chrono::microseconds(0));
}

// The packaged example (packaging/ubroker.toml) shows every limit and timeout with its
// default: uncommented, it must parse, name every key there is, and change nothing.
TEST(Config, ThePackagedExampleShowsEveryLimitWithItsDefault) {
  std::ifstream example(UBROKER_SOURCE_DIR "/packaging/ubroker.toml");
  ASSERT_TRUE(example) << "cannot read packaging/ubroker.toml";
  std::string uncommented, line;
  bool in_tables = false;
  std::size_t keys = 0;
  while (std::getline(example, line)) {
    if (line == "#[limits]" || line == "#[timeouts]" || line == "#[lanes]") in_tables = true;
    if (line.starts_with("# --- Access policy")) in_tables = false;
    if (in_tables && line.size() > 1 && line[0] == '#' && line[1] != ' ') {
      uncommented += line.substr(1) + "\n";
      keys += line.find(" = ") != std::string::npos;
    }
  }
  const auto path = write_temp(uncommented);
  Config c;
  ASSERT_TRUE(load_config_file(path, c).has_value()) << uncommented;
  EXPECT_TRUE(c.limits == Limits{}) << "a value in the example is not the default";
  EXPECT_TRUE(c.timeouts == Timeouts{}) << "a value in the example is not the default";
  EXPECT_TRUE(c.lanes == LaneSettings{}) << "a value in the example is not the default";
  EXPECT_EQ(keys, 21u + 5u + 5u) << "every [limits], [timeouts] and [lanes] key, once";
  ::unlink(path.c_str());
}

TEST(Config, LoadsValues) {
  const auto path = write_temp(
      "socket = \"/tmp/x.sock\"\nsocket_mode = \"0600\"\nbusy_poll_us = 40\n[limits]\nqueue_max_messages = 10\n"
      "[timeouts]\nslow_consumer_ms = 250\n");
  Config c;
  ASSERT_TRUE(load_config_file(path, c).has_value());
  EXPECT_EQ(c.socket_path, "/tmp/x.sock");
  EXPECT_EQ(c.socket_mode, 0600u);
  EXPECT_EQ(c.busy_poll, std::chrono::microseconds(40));
  EXPECT_EQ(c.limits.queue_max_messages, 10u);
  EXPECT_EQ(c.timeouts.slow_consumer, std::chrono::milliseconds(250));
  ::unlink(path.c_str());
}

TEST(Config, UnknownKeyNamesKeyAndLine) {
  const auto path = write_temp("[limits]\nqueue_max_messages = 10\nqueue_max_mesages = 11\n");
  Config c;
  auto r = load_config_file(path, c);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("line 3"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("limits.queue_max_mesages"), std::string::npos) << r.error();
  ::unlink(path.c_str());
}

TEST(Config, BadValuesAreErrors) {
  for (const char* text : {"socket_mode = \"999\"\n", "[limits]\nqueue_max_messages = -1\n",
                           "[timeouts]\nshutdown_ms = \"soon\"\n", "log_level = 3\n", "not toml at all [",
                           "busy_poll_us = 10001\n", "busy_poll_us = -1\n"}) {
    const auto path = write_temp(text);
    Config c;
    EXPECT_FALSE(load_config_file(path, c).has_value()) << text;
    ::unlink(path.c_str());
  }
  Config c;
  c.limits.queue_max_bytes = 4096;
  EXPECT_FALSE(validate(c).has_value());  // a max-size frame would not fit
  c = Config{};
  c.log_level = "loud";
  EXPECT_FALSE(validate(c).has_value());
}

}  // namespace
}  // namespace ubroker::broker

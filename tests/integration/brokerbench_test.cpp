// brokerbench runs every workload at a tiny size so the tool cannot rot: each result line is
// checked for shape and for zero loss. No time is asserted.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>

#include "process.hpp"
#include "test_util.hpp"

namespace ubroker::test {
namespace {

TEST(Brokerbench, EveryWorkloadAtATinySize) {
  Process bench = Process::spawn({UBROKER_BROKERBENCH, "all", "--repeat", "1", "--count", "3000", "--warmup", "200",
                                  "--subscribers", "2", "--connections", "50", "--bulk-count", "40",
                                  "--bulk-size", "262144", "--json"});
  auto st = bench.wait(std::chrono::seconds(240));
  ASSERT_TRUE(st.has_value()) << "brokerbench did not finish";
  ASSERT_EQ(exit_code(*st), 0) << bench.err();
  std::map<std::string, int> lines_per_workload;
  std::istringstream out(bench.out());
  const std::regex shape(
      R"re(^\{"workload":"([A-Za-z0-9]+)","metric":"([^"]+)","unit":"[^"]+","median":([0-9.]+),"min":[0-9.]+,)re"
      R"re("max":[0-9.]+,"floor":([0-9.]+),"ratio":[0-9.]+,"runs":1,"lost":0,"reordered":0,"duplicates":0,)re"
      R"re("note":"[^"]*"\}$)re");
  for (std::string line; std::getline(out, line);) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, shape)) << line;
    EXPECT_GT(std::stod(m[3]), 0) << line;  // a figure was measured
    if (m[2] != "broker RSS/client") {
      EXPECT_GT(std::stod(m[4]), 0) << line;  // and its floor, in the same run
    }
    ++lines_per_workload[m[1]];
  }
  // p50, p99, beside the relay floor, its epoll-ends variant and the futex lane floor
  EXPECT_EQ(lines_per_workload["latency64"], 6);
  EXPECT_EQ(lines_per_workload["reqrep64"], 3);   // p50, p99, calls/s
  EXPECT_EQ(lines_per_workload["thru64"], 1);
  EXPECT_EQ(lines_per_workload["fanout64"], 1);
  EXPECT_EQ(lines_per_workload["bulk1M"], 2);  // GB/s beside the zero-copy floor and beside the socketpair
  EXPECT_EQ(lines_per_workload["connscale50"], 3);  // RSS per client, W1 p50 and p99 beside idle clients
}

// latency64 through each path of the client API, each measured and named in its note.
TEST(Brokerbench, LatencyThroughEveryClientApiPath) {
  for (const char* api : {"callback", "receive", "request", "poll"}) {
    Process bench = Process::spawn({UBROKER_BROKERBENCH, "latency64", "--api", api, "--repeat", "1", "--count", "2000",
                                    "--warmup", "200", "--no-limit", "--json"});
    auto st = bench.wait(std::chrono::seconds(120));
    ASSERT_TRUE(st.has_value()) << api << ": brokerbench did not finish";
    ASSERT_EQ(exit_code(*st), 0) << api << ": " << bench.err();
    const std::regex p50(std::string(R"re("metric":"RTT p50","unit":"us","median":([0-9.]+),.*"note":"api: )re") + api);
    std::smatch m;
    const std::string out = bench.out();
    ASSERT_TRUE(std::regex_search(out, m, p50)) << out;
    EXPECT_GT(std::stod(m[1]), 0) << out;
  }
  // The open loop drives one path only.
  Process refused = Process::spawn({UBROKER_BROKERBENCH, "latency64", "--api", "receive", "--rate", "1000"});
  auto st = refused.wait(std::chrono::seconds(30));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(exit_code(*st), 2) << refused.err();
}

// Busy polling on both sides, with the CPU it costs reported beside the latency.
TEST(Brokerbench, BusyPollingReportsTheCpuItSpends) {
  Process bench = Process::spawn({UBROKER_BROKERBENCH, "latency64", "--api", "receive", "--busy-poll-us", "50", "--cpu",
                                  "--repeat", "1", "--count", "2000", "--warmup", "200", "--no-limit", "--json"});
  auto st = bench.wait(std::chrono::seconds(120));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0) << bench.err();
  const std::regex cpu(R"re("metric":"CPU s/100k RTT","unit":"s","median":([0-9.]+),.*busy poll 50 us)re");
  std::smatch m;
  const std::string out = bench.out();
  ASSERT_TRUE(std::regex_search(out, m, cpu)) << out;
  EXPECT_GT(std::stod(m[1]), 0) << out;
}

// --plot and --histogram: the SVG draws both distributions (ubroker and its floor), each a
// line with a point per histogram bucket, and the CSV has every sample.
TEST(Brokerbench, PlotDrawsBothDistributionsAndTheCsvHoldsEverySample) {
  char tmpl[] = "/tmp/ubroker-plot-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  Process bench = Process::spawn({UBROKER_BROKERBENCH, "latency64", "--repeat", "1", "--count", "2000", "--warmup",
                                  "100", "--plot", dir + "/lat.svg", "--histogram", dir + "/lat.csv"});
  auto st = bench.wait(std::chrono::seconds(120));
  ASSERT_TRUE(st.has_value());
  ASSERT_EQ(exit_code(*st), 0) << bench.err();
  std::ifstream svg_file(dir + "/lat.svg");
  const std::string svg((std::istreambuf_iterator<char>(svg_file)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(svg.starts_with("<svg ")) << svg.substr(0, 200);
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  const std::regex line(R"re(<polyline [^>]*points="((?:[0-9.e+-]+,[0-9.e+-]+ )+)"/>)re");
  int lines = 0;
  for (std::sregex_iterator it(svg.begin(), svg.end(), line), end; it != end; ++it) {
    ++lines;
    EXPECT_GE(std::count((*it)[1].first, (*it)[1].second, ','), 5) << "a line of a handful of points at least";
  }
  EXPECT_EQ(lines, 2);
  for (const char* label : {"ubroker (64 B via brokerd)", "floor: epoll relay hop", ">90%<", ">99%<", ">99.9%<"}) {
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  }
  std::ifstream csv(dir + "/lat.csv");
  std::string header, row;
  std::getline(csv, header);
  EXPECT_EQ(header, "value_ns,count,cumulative");
  std::uint64_t samples = 0;
  double cumulative = 0;
  while (std::getline(csv, row)) {
    unsigned long long ns = 0, n = 0;
    ASSERT_EQ(std::sscanf(row.c_str(), "%llu,%llu,%lf", &ns, &n, &cumulative), 3) << row;
    samples += n;
  }
  EXPECT_EQ(samples, 2000u);
  EXPECT_DOUBLE_EQ(cumulative, 1.0);
  std::filesystem::remove_all(dir);
}

// --rate: the open loop sends on a schedule and measures from each message's intended send
// time; both the broker's run and the floor's report every message, none lost, and the CSV
// holds one sample per measured message.
TEST(Brokerbench, OpenLoopAtAFixedRateReportsEveryMessage) {
  char tmpl[] = "/tmp/ubroker-rate-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  Process bench = Process::spawn({UBROKER_BROKERBENCH, "latency64", "--repeat", "1", "--count", "1500", "--warmup",
                                  "100", "--rate", "2000", "--histogram", dir + "/open.csv", "--json"});
  auto st = bench.wait(std::chrono::seconds(120));
  ASSERT_TRUE(st.has_value()) << "brokerbench did not finish";
  ASSERT_EQ(exit_code(*st), 0) << bench.err();
  std::istringstream out(bench.out());
  const std::regex shape(
      R"re(^\{"workload":"latency64","metric":"RTT (p50|p99)","unit":"us","median":([0-9.]+),.*"floor":([0-9.]+),)re"
      R"re(.*"lost":0,"reordered":0,"duplicates":0,"note":"open loop at 2000/s, from intended send times; )re"
      R"re(floor: epoll relay hop, same schedule"\}$)re");
  int lines = 0;
  for (std::string line; std::getline(out, line); ++lines) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, shape)) << line;
    EXPECT_GT(std::stod(m[2]), 0) << line;
    EXPECT_GT(std::stod(m[3]), 0) << line;
  }
  EXPECT_EQ(lines, 2);
  std::ifstream csv(dir + "/open.csv");
  std::string row;
  std::getline(csv, row);
  std::uint64_t samples = 0;
  while (std::getline(csv, row)) {
    unsigned long long ns = 0, n = 0;
    double cumulative = 0;
    ASSERT_EQ(std::sscanf(row.c_str(), "%llu,%llu,%lf", &ns, &n, &cumulative), 3) << row;
    samples += n;
  }
  EXPECT_EQ(samples, 1500u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ubroker::test

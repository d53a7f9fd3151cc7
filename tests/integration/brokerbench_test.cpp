// brokerbench runs every workload at a tiny size so the tool cannot rot: each result line is
// checked for shape and for zero loss. No time is asserted.
#include <gtest/gtest.h>

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
  EXPECT_EQ(lines_per_workload["latency64"], 2);  // p50, p99
  EXPECT_EQ(lines_per_workload["reqrep64"], 3);   // p50, p99, calls/s
  EXPECT_EQ(lines_per_workload["thru64"], 1);
  EXPECT_EQ(lines_per_workload["fanout64"], 1);
  EXPECT_EQ(lines_per_workload["bulk1M"], 2);  // GB/s beside the zero-copy floor and beside the socketpair
  EXPECT_EQ(lines_per_workload["connscale50"], 3);  // RSS per client, W1 p50 and p99 beside idle clients
}

}  // namespace
}  // namespace ubroker::test

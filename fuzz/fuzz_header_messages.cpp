// libFuzzer: the messages inside frames and admin answers (Header and its parts, the admin
// and presence payloads brokerctl and clients decode) and the topic and pattern rules the
// broker and the access policy apply to what they carry. The first byte picks the message;
// topic checks split the rest into three strings and test the matcher's and the policy's
// invariants: a pattern that covers another matches every topic the other matches.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ubroker.pb.h"
#include "ubroker/proto/topic.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

template <class Msg>
void parse_and_reserialize(std::string_view bytes) {
  Msg m;
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  Msg again;
  check(again.ParseFromString(m.SerializeAsString()));
  check(again.ByteSizeLong() == m.ByteSizeLong());  // bytes may differ: map order is unspecified
}

void topics(std::string_view bytes) {
  using namespace ubroker::proto;
  const auto a_end = bytes.find('\n');
  if (a_end == std::string_view::npos) return;
  const auto b_end = bytes.find('\n', a_end + 1);
  if (b_end == std::string_view::npos) return;
  const std::string_view p = bytes.substr(0, a_end), q = bytes.substr(a_end + 1, b_end - a_end - 1),
                         t = bytes.substr(b_end + 1);
  const bool p_ok = check_pattern(p) == nullptr, q_ok = check_pattern(q) == nullptr, t_ok = check_topic(t) == nullptr;
  if (t_ok) check(check_pattern(t) == nullptr);  // every topic is also a pattern
  if (!p_ok || !q_ok) return;
  check(pattern_covers(p, p));
  if (!t_ok) return;
  if (pattern_covers(p, q) && pattern_matches(q, t)) check(pattern_matches(p, t));
  if (!is_wildcard(q)) check(pattern_matches(q, t) == (q == t));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is refused, not worth a line per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ubroker::wire;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 10) {
    case 0: parse_and_reserialize<Header>(rest); break;
    case 1: parse_and_reserialize<BrokerStatus>(rest); break;
    case 2: parse_and_reserialize<ClientList>(rest); break;
    case 3: parse_and_reserialize<SubscriptionList>(rest); break;
    case 4: parse_and_reserialize<TopicList>(rest); break;
    case 5: parse_and_reserialize<SegmentList>(rest); break;
    case 6: parse_and_reserialize<ClientEvent>(rest); break;
    case 7: parse_and_reserialize<ServiceEvent>(rest); break;
    case 8: parse_and_reserialize<KickRequest>(rest); break;
    default: topics(rest); break;
  }
  return 0;
}

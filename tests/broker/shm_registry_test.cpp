// The broker's shared-memory registry without a broker: what it accepts, the record life cycle
// (open, hold, release marks the record released in the segment), quotas, and a segment that
// outlives its owner until its last record is released, then detaches its receivers.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "shm_registry.hpp"
#include "ubroker/shm/mapping.hpp"
#include "ubroker/shm/memfd.hpp"
#include "ubroker/shm/segment_layout.hpp"

namespace ubroker::broker {
namespace {

constexpr std::uint64_t kSegment = 64 * 1024;
constexpr std::uint64_t kFirstPayload = shm::kHeaderBytes + shm::kRecordHeaderBytes;

// A producer's segment: created, mapped, every page written (as a producer initialises it).
struct Producer {
  Producer() : memfd(shm::Memfd::create("test", kSegment).value()),
               view(shm::Mapping::map(memfd.fd(), kSegment, shm::Access::kReadWrite).value()) {
    std::fill(view.bytes().begin(), view.bytes().end(), std::byte{0});
  }
  shm::UniqueFd dup() const { return shm::UniqueFd(::fcntl(memfd.fd(), F_DUPFD_CLOEXEC, 0)); }
  std::uint32_t state_of(std::uint64_t payload_offset) const {
    auto* rec = reinterpret_cast<shm::RecordHeader*>(view.data() + payload_offset - shm::kRecordHeaderBytes);
    return rec->state.load();
  }
  shm::Memfd memfd;
  shm::Mapping view;
};

class ShmRegistryTest : public ::testing::Test {
 protected:
  Limits limits_;
  Stats stats_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> detached_;  // (session, segment)
  ShmRegistry registry_{limits_, stats_, [this](std::uint64_t s, std::uint64_t seg) { detached_.emplace_back(s, seg); }};
};

TEST_F(ShmRegistryTest, ARecordIsReleasedInTheSegmentWhenItsLastHolderLetsGo) {
  Producer p;
  ASSERT_TRUE(registry_.add(1, 1000, 7, p.dup()).has_value());
  auto record = registry_.open(1, 7, {.offset = kFirstPayload, .length = 100});
  ASSERT_TRUE(record.has_value());
  registry_.hold(*record);  // two receivers
  registry_.hold(*record);
  registry_.close_open(*record, false);
  registry_.release(*record);
  EXPECT_EQ(p.state_of(kFirstPayload), shm::kRecordLive);
  registry_.release(*record);
  EXPECT_EQ(p.state_of(kFirstPayload), shm::kRecordReleased);
}

TEST_F(ShmRegistryTest, ReferencesOutsideTheSegmentOrToSomeoneElsesAreRefused) {
  Producer p;
  ASSERT_TRUE(registry_.add(1, 1000, 7, p.dup()).has_value());
  EXPECT_FALSE(registry_.open(2, 7, {.offset = kFirstPayload, .length = 10}).has_value());  // not client 2's
  EXPECT_FALSE(registry_.open(1, 7, {.offset = kFirstPayload, .length = kSegment}).has_value());
  EXPECT_FALSE(registry_.open(1, 7, {.offset = kFirstPayload + 1, .length = 10}).has_value());
  EXPECT_EQ(stats_.shm_refused, 3u);
}

TEST_F(ShmRegistryTest, QuotasPerClientAndPerUid) {
  limits_.shm_max_segments_per_client = 1;
  limits_.shm_max_segments_per_uid = 2;
  Producer a, b, c;
  ASSERT_TRUE(registry_.add(1, 1000, 1, a.dup()).has_value());
  auto second = registry_.add(1, 1000, 2, b.dup());
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("shm_max_segments_per_client"), std::string::npos);
  ASSERT_TRUE(registry_.add(2, 1000, 1, b.dup()).has_value());
  auto third = registry_.add(3, 1000, 1, c.dup());
  ASSERT_FALSE(third.has_value());
  EXPECT_NE(third.error().message.find("shm_max_segments_per_uid"), std::string::npos);
  EXPECT_EQ(registry_.bytes_of(1000), 2 * kSegment);
}

TEST_F(ShmRegistryTest, ASegmentOutlivesItsOwnerUntilItsLastRecordIsReleased) {
  Producer p;
  ASSERT_TRUE(registry_.add(1, 1000, 7, p.dup()).has_value());
  auto record = registry_.open(1, 7, {.offset = kFirstPayload, .length = 10});
  ASSERT_TRUE(record.has_value());
  registry_.hold(*record);
  registry_.segment_of(*record).attached.push_back(5);  // receiver 5 was passed its fd
  registry_.owner_gone(1);
  EXPECT_EQ(registry_.segments(), 1u);  // receiver 5 still reads it
  EXPECT_TRUE(detached_.empty());
  registry_.release(*record);
  EXPECT_EQ(registry_.segments(), 0u);
  EXPECT_EQ(detached_, (std::vector<std::pair<std::uint64_t, std::uint64_t>>{{5, 1}}));
  EXPECT_EQ(registry_.bytes_of(1000), 0u);
}

TEST_F(ShmRegistryTest, PagesNobodyWroteAreNotTouched) {
  // A segment whose pages were never written: the header page is refused at registration.
  auto blank = shm::Memfd::create("blank", kSegment).value();
  auto refused = registry_.add(1, 1000, 1, shm::UniqueFd(::fcntl(blank.fd(), F_DUPFD_CLOEXEC, 0)));
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("never written"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::fstat(blank.fd(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0) << "the registry allocated a page of a segment nobody wrote";
}

}  // namespace
}  // namespace ubroker::broker

// OutQueue accounting: messages and bytes in and out, partial writes, references kept alive,
// and discarding only what has not started.
#include "out_queue.hpp"
#include "ubroker/shm/unique_fd.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <unistd.h>

namespace ubroker::broker {
namespace {

void append_text(OutQueue& q, std::string_view s) {
  std::memcpy(q.append_inline(s.size()), s.data(), s.size());
}

std::string drain(OutQueue& q, std::size_t max_per_write) {
  std::string out;
  while (!q.empty()) {
    iovec iov[8];
    OutQueue::Fds fds;
    const std::size_t n = q.gather(iov, fds);
    EXPECT_EQ(fds.count, 0u);
    std::size_t took = 0;
    for (std::size_t i = 0; i < n && took < max_per_write; ++i) {
      const std::size_t k = std::min(iov[i].iov_len, max_per_write - took);
      out.append(static_cast<const char*>(iov[i].iov_base), k);
      took += k;
    }
    q.consume(took);
  }
  return out;
}

TEST(OutQueue, CountsMessagesAndBytes) {
  ChunkPool pool;
  OutQueue q(pool);
  append_text(q, "head1");
  q.end_message();
  append_text(q, "head2");
  q.end_message();
  EXPECT_EQ(q.messages(), 2u);
  EXPECT_EQ(q.bytes(), 10u);
  iovec iov[4];
  OutQueue::Fds fds;
  EXPECT_EQ(q.gather(iov, fds), 1u);  // coalesced into one piece
  EXPECT_EQ(q.consume(7).messages, 1u);   // first message done, second half-way
  EXPECT_EQ(q.messages(), 1u);
  EXPECT_EQ(q.bytes(), 3u);
  EXPECT_EQ(q.consume(3).messages, 1u);
  EXPECT_TRUE(q.empty());
}

TEST(OutQueue, ReferencedPayloadStaysAliveUntilSent) {
  ChunkPool pool;
  OutQueue q(pool);
  {
    ChunkRef payload = pool.acquire();
    std::memcpy(payload->data(), "BIGPAYLOAD", 10);
    append_text(q, "h:");
    q.append_ref(payload, payload->data(), 10);
    q.end_message();
    EXPECT_EQ(payload.get()->refs(), 2u);
  }
  EXPECT_EQ(drain(q, 3), "h:BIGPAYLOAD");
  EXPECT_EQ(pool.live(), 0u);  // every chunk went back once sent
}

TEST(OutQueue, DiscardKeepsThePartlySentMessage) {
  ChunkPool pool;
  OutQueue q(pool);
  ChunkRef payload = pool.acquire();
  std::memcpy(payload->data(), "PAYLOAD", 7);
  append_text(q, "H1");
  q.append_ref(payload, payload->data(), 7);
  q.end_message();
  append_text(q, "H2xx");
  q.end_message();
  append_text(q, "H3yy");
  q.end_message();
  q.consume(2);  // H1 is out, its payload piece not started: the message is under way
  EXPECT_EQ(q.discard_unsent().messages, 2u);
  EXPECT_EQ(q.messages(), 1u);
  EXPECT_EQ(drain(q, 100), "PAYLOAD");
  // A queue at a message boundary discards everything.
  append_text(q, "A");
  q.end_message();
  EXPECT_EQ(q.discard_unsent().messages, 1u);
  EXPECT_TRUE(q.empty());
  // And it is usable afterwards.
  append_text(q, "B");
  q.end_message();
  EXPECT_EQ(drain(q, 100), "B");
}

TEST(OutQueue, CountsDeliveriesApartFromOtherFrames) {
  ChunkPool pool;
  OutQueue q(pool);
  append_text(q, "D1");
  q.end_message(true);
  append_text(q, "A1");
  q.end_message();  // an ACK, say
  append_text(q, "D2");
  q.end_message(true);
  append_text(q, "D3");
  q.end_message(true);
  EXPECT_EQ(q.messages(), 4u);
  EXPECT_EQ(q.deliveries(), 3u);
  const auto first = q.consume(5);  // D1, A1 and half of D2
  EXPECT_EQ(first.messages, 2u);
  EXPECT_EQ(first.deliveries, 1u);
  EXPECT_EQ(q.deliveries(), 2u);
  // D2 is under way and stays; D3 goes.
  const auto dropped = q.discard_unsent();
  EXPECT_EQ(dropped.messages, 1u);
  EXPECT_EQ(dropped.deliveries, 1u);
  EXPECT_EQ(q.deliveries(), 1u);
  const auto last = q.consume(1);  // the rest of D2
  EXPECT_EQ(last.deliveries, 1u);
  EXPECT_EQ(q.deliveries(), 0u);
  EXPECT_TRUE(q.empty());
}

TEST(OutQueue, ManyMessagesNoGrowthAfterWarmup) {
  ChunkPool pool;
  OutQueue q(pool);
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 1000; ++i) {
      append_text(q, "0123456789");
      q.end_message();
    }
    EXPECT_EQ(drain(q, 4096).size(), 10000u);
  }
  EXPECT_EQ(pool.live(), 0u);
  EXPECT_LE(pool.free_chunks(), 2u);
}

}  // namespace
}  // namespace ubroker::broker

namespace ubroker::broker {
namespace {

// A message carrying an fd starts its own batch, the fd goes with that batch's first send,
// and an fd of a discarded message is closed with it.
TEST(OutQueue, FdRidesOnTheBatchThatStartsItsMessage) {
  ChunkPool pool;
  OutQueue q(pool);
  append_text(q, "one");
  q.end_message();
  q.attach_fd(shm::UniqueFd(::dup(STDIN_FILENO)));
  append_text(q, "two");
  q.end_message();
  append_text(q, "three");
  q.end_message();
  iovec iov[8];
  OutQueue::Fds fds;
  ASSERT_EQ(q.gather(iov, fds), 1u);
  EXPECT_EQ(fds.count, 0u);
  EXPECT_EQ(iov[0].iov_len, 3u);  // stops before "two"
  q.consume(3);
  ASSERT_EQ(q.gather(iov, fds), 1u);
  ASSERT_EQ(fds.count, 1u);
  EXPECT_GE(fds.fd[0], 0);
  EXPECT_EQ(iov[0].iov_len, 8u);  // "two" and "three" together
  q.consume(1);                   // a partial send still took the fd along
  ASSERT_EQ(q.gather(iov, fds), 1u);
  EXPECT_EQ(fds.count, 0u);
  q.consume(7);
  EXPECT_TRUE(q.empty());
}

TEST(OutQueue, DiscardClosesTheFdsOfDiscardedMessages) {
  ChunkPool pool;
  OutQueue q(pool);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  shm::UniqueFd reader(p[0]);
  append_text(q, "one");
  q.end_message();
  q.attach_fd(shm::UniqueFd(p[1]));  // the queue owns the pipe's only write end
  append_text(q, "two");
  q.end_message();
  EXPECT_EQ(q.discard_unsent().messages, 2u);
  char c;
  EXPECT_EQ(::read(reader.get(), &c, 1), 0);  // EOF: the write end was closed
}

}  // namespace
}  // namespace ubroker::broker

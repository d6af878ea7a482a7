// The submit queue, after gRPC's mpscq_test: producers released together by a
// start latch, one consumer checking per-producer FIFO and the total count.
// Sized for a 2-core machine; the test command also runs it under TSan.
#include "batcher/mpsc_queue.h"

#include <gtest/gtest.h>

#include <latch>
#include <thread>
#include <vector>

#include "batcher/batcher.h"
#include "tests/testing/fake_runner.h"

namespace vocoder::batcher {
namespace {

struct Item : MpscNode {
  int producer = 0;
  int seq = 0;
};

TEST(MpscQueueTest, SerialRoundTripsInOrder) {
  MpscQueue q;
  std::vector<Item> items(1000);
  EXPECT_TRUE(q.Empty());
  EXPECT_EQ(q.Pop(), nullptr);
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < items.size(); ++i) {
      items[i].seq = static_cast<int>(i);
      q.Push(&items[i]);
    }
    EXPECT_FALSE(q.Empty());
    for (size_t i = 0; i < items.size(); ++i) {
      auto* n = static_cast<Item*>(q.Pop());
      ASSERT_NE(n, nullptr);
      EXPECT_EQ(n->seq, static_cast<int>(i));
    }
    EXPECT_TRUE(q.Empty());
  }
}

TEST(MpscQueueTest, ManyProducersKeepPerProducerOrder) {
  constexpr int kProducers = 8;
  constexpr int kPerProducer = 20000;
  MpscQueue q;
  std::vector<std::vector<Item>> items(kProducers);
  for (auto& v : items) v = std::vector<Item>(kPerProducer);
  std::latch start(kProducers + 1);
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerProducer; ++i) {
        items[p][i].producer = p;
        items[p][i].seq = i;
        q.Push(&items[p][i]);
      }
    });
  }
  start.arrive_and_wait();
  std::vector<int> next(kProducers, 0);
  int total = 0;
  while (total < kProducers * kPerProducer) {
    auto* n = static_cast<Item*>(q.Pop());
    if (n == nullptr) continue;  // empty or a push in progress
    ASSERT_EQ(n->seq, next[n->producer]) << "producer " << n->producer << " reordered";
    ++next[n->producer];
    ++total;
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(q.Empty());
  EXPECT_EQ(total, kProducers * kPerProducer);
}

// The whole batcher under contention: many submitting threads, one stream
// each, on the real clock; every job completes once, each stream in order.
TEST(BatcherStressTest, ProducersReleasedTogetherCompleteInStreamOrder) {
  constexpr int kProducers = 8;
  constexpr int kPerProducer = 1500;
  SystemClock clock;
  testing::FakeRunner runner;
  testing::CompletionLog log;
  BatcherOptions o;
  o.max_batch_size = 16;
  o.max_queue_jobs = kProducers * kPerProducer;
  o.idle_grace = std::chrono::microseconds(20);
  auto b = Batcher::Create(o, {clock, runner, nullptr});
  ASSERT_TRUE(b.ok());
  std::latch start(kProducers);
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      (*b)->StreamOpened();
      start.arrive_and_wait();
      for (int i = 0; i < kPerProducer; ++i) {
        std::unique_ptr<Job> job = std::make_unique<testing::TestJob>(
            p * kPerProducer + i, static_cast<uint64_t>(p), BatchKey{}, 10, &log);
        ASSERT_TRUE((*b)->Submit(&job).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  log.WaitForCompletions(kProducers * kPerProducer);
  std::vector<int> next(kProducers, 0);
  for (int id : log.order()) {
    const int p = id / kPerProducer;
    ASSERT_EQ(id % kPerProducer, next[p]) << "stream " << p << " completed out of order";
    ++next[p];
  }
  const BatcherStats s = (*b)->stats();
  EXPECT_EQ(s.completed_ok, kProducers * kPerProducer);
  EXPECT_GT(s.mean_batch_size(), 1.0);
  (*b)->Shutdown();
}

}  // namespace
}  // namespace vocoder::batcher

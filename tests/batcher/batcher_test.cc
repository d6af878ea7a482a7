// The GPU-thread loop with a fake clock and a fake runner: no sleeps decide
// correctness. Tests synchronize on the fake clock's sleeper and the runner.
#include "batcher/batcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::batcher {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using vocoder::testing::CompletionLog;
using vocoder::testing::FakeClock;
using vocoder::testing::FakeRunner;
using vocoder::testing::StatusIs;
using vocoder::testing::TestJob;

BatchKey Voice(const std::string& content, uint32_t steps = 10) {
  return BatchKey{FingerprintBytes(content.data(), content.size()), steps};
}

class BatcherTest : public ::testing::Test {
 protected:
  void Start(BatcherOptions options) {
    auto b = Batcher::Create(options, {clock_, runner_, nullptr});
    ASSERT_TRUE(b.ok()) << b.status();
    batcher_ = std::move(*b);
  }
  static BatcherOptions Slow() {
    // Only what a test advances to fires.
    BatcherOptions o;
    o.max_batch_size = 4;
    o.early_fire_fraction = 1.0;
    o.idle_grace = milliseconds(50);
    o.max_wait = milliseconds(10);
    o.grouping = Grouping::kVoice;
    return o;
  }
  // Submits and checks the ownership contract on every call (TF's ScheduleTask).
  absl::Status Submit(int id, uint64_t stream, BatchKey key = Voice("a"), int64_t cost = 10,
                      TimePoint deadline = kNever,
                      std::shared_ptr<const Cancellation> cancel = nullptr) {
    std::unique_ptr<Job> job =
        std::make_unique<TestJob>(id, stream, key, cost, &log_, deadline, std::move(cancel));
    absl::Status s = batcher_->Submit(&job);
    EXPECT_EQ(s.ok(), job == nullptr) << "Submit must take ownership iff it returns OK";
    return s;
  }

  FakeClock clock_;
  FakeRunner runner_;
  CompletionLog log_;
  std::unique_ptr<Batcher> batcher_;
};

TEST_F(BatcherTest, LoneStreamRunsWithoutWaitingForPeers) {
  Start(Slow());
  batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1).ok());
  log_.WaitForCompletions(1);  // no clock advance: nothing was waited for
  EXPECT_TRUE(log_.status(1).ok());
  EXPECT_EQ(log_.entries()[1][0].info.trigger, Trigger::kAllReady);
  EXPECT_EQ(log_.entries()[1][0].info.queue_wait, Duration::zero());
}

TEST_F(BatcherTest, IdleGraceRunsALoneJobWhenStreamsAreUnknown) {
  BatcherOptions o = Slow();
  o.idle_grace = microseconds(200);
  Start(o);
  ASSERT_TRUE(Submit(1, 1).ok());
  EXPECT_EQ(clock_.WaitForSleeper(), clock_.Now() + microseconds(200));
  clock_.Advance(microseconds(199));
  EXPECT_TRUE(runner_.batches().empty());
  clock_.Advance(microseconds(1));
  log_.WaitForCompletions(1);
  EXPECT_EQ(log_.entries()[1][0].info.trigger, Trigger::kIdle);
}

TEST_F(BatcherTest, ObeysMaxWait) {
  Start(Slow());
  for (int i = 0; i < 3; ++i) batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1).ok());
  const TimePoint t0 = clock_.Now();
  EXPECT_EQ(clock_.WaitForSleeper(), t0 + milliseconds(10));
  const int64_t sleeps = clock_.sleeps();
  clock_.Advance(milliseconds(9));
  EXPECT_TRUE(runner_.batches().empty());
  // A second job keeps idle from firing; max_wait still counts from the first.
  ASSERT_TRUE(Submit(2, 2, Voice("b")).ok());
  EXPECT_EQ(clock_.WaitForSleeper(sleeps), t0 + milliseconds(10));
  EXPECT_TRUE(runner_.batches().empty());
  clock_.Advance(milliseconds(1));
  log_.WaitForCompletions(2);
  EXPECT_EQ(log_.entries()[1][0].info.trigger, Trigger::kMaxWait);
  EXPECT_EQ(log_.entries()[1][0].info.queue_wait, milliseconds(10));
  EXPECT_EQ(log_.entries()[2][0].info.queue_wait, milliseconds(1));
}

TEST_F(BatcherTest, FiresEarlyWhenNearlyFull) {
  BatcherOptions o = Slow();
  o.max_batch_size = 10;
  o.early_fire_fraction = 0.8;
  Start(o);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(Submit(i, i).ok());
  clock_.WaitForSleeper();
  EXPECT_TRUE(runner_.batches().empty());
  ASSERT_TRUE(Submit(7, 7).ok());
  log_.WaitForCompletions(8);
  ASSERT_EQ(runner_.batches().size(), 1u);
  EXPECT_EQ(runner_.batches()[0].size(), 8u);
  EXPECT_EQ(batcher_->stats().triggered(Trigger::kNearFull), 1);
}

// The design note's bug: grouping by id(ref_dict). Equal content under
// different names and objects must share a batch; different content must not.
TEST_F(BatcherTest, GroupsVoicesByContentNotIdentity) {
  Start(Slow());
  for (int i = 0; i < 4; ++i) batcher_->StreamOpened();
  const std::string alice = "embedding-bytes-of-alice";
  const std::string alice_copy(alice.begin(), alice.end());  // another object, same content
  ASSERT_NE(alice.data(), alice_copy.data());
  ASSERT_TRUE(Submit(1, 1, Voice(alice)).ok());
  ASSERT_TRUE(Submit(2, 2, Voice(alice_copy)).ok());
  ASSERT_TRUE(Submit(3, 3, Voice("embedding-bytes-of-bob")).ok());
  ASSERT_TRUE(Submit(4, 4, Voice(alice, /*steps=*/5)).ok());  // same voice, other schedule
  log_.WaitForCompletions(4);
  EXPECT_THAT(runner_.batches(),
              UnorderedElementsAre(UnorderedElementsAre(1, 2), ElementsAre(3), ElementsAre(4)));
  EXPECT_EQ(batcher_->stats().groups_per_drain.at(3), 1);
}

TEST_F(BatcherTest, MixedModeSharesBatchesAcrossVoicesButNotSchedules) {
  BatcherOptions o = Slow();
  o.grouping = Grouping::kMixed;
  Start(o);
  for (int i = 0; i < 3; ++i) batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1, Voice("alice")).ok());
  ASSERT_TRUE(Submit(2, 2, Voice("bob")).ok());
  ASSERT_TRUE(Submit(3, 3, Voice("carol", 5)).ok());
  log_.WaitForCompletions(3);
  EXPECT_THAT(runner_.batches(), UnorderedElementsAre(UnorderedElementsAre(1, 2), ElementsAre(3)));
}

TEST_F(BatcherTest, ExpiresJobsBeforeTheGpu) {
  Start(Slow());
  batcher_->StreamOpened();
  runner_.Block();
  ASSERT_TRUE(Submit(1, 1).ok());
  runner_.WaitForBatches(1);  // the GPU is busy with job 1
  ASSERT_TRUE(Submit(2, 2, Voice("a"), 10, clock_.Now() + milliseconds(5)).ok());
  clock_.Advance(milliseconds(5));
  runner_.Release();
  log_.WaitForCompletions(2);
  EXPECT_THAT(log_.status(2), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("queued")));
  EXPECT_EQ(runner_.batches().size(), 1u);
  EXPECT_EQ(batcher_->stats().expired, 1);
}

TEST_F(BatcherTest, CancelledJobsNeverReachTheGpu) {
  Start(Slow());
  batcher_->StreamOpened();
  runner_.Block();
  ASSERT_TRUE(Submit(1, 1).ok());
  runner_.WaitForBatches(1);
  auto cancel = std::make_shared<Cancellation>();
  ASSERT_TRUE(Submit(2, 2, Voice("a"), 10, kNever, cancel).ok());
  cancel->Cancel();
  runner_.Release();
  log_.WaitForCompletions(2);
  EXPECT_THAT(log_.status(2), StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_THAT(runner_.batches(), ElementsAre(ElementsAre(1)));
}

TEST_F(BatcherTest, BoundedAdmissionRejectsWithoutTakingOwnership) {
  BatcherOptions o = Slow();
  o.max_queue_jobs = 3;
  Start(o);
  batcher_->StreamOpened();
  runner_.Block();
  ASSERT_TRUE(Submit(1, 1).ok());
  runner_.WaitForBatches(1);  // job 1 left the queue
  for (int i = 2; i <= 4; ++i) ASSERT_TRUE(Submit(i, i).ok());
  EXPECT_THAT(Submit(5, 5), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("retry")));
  EXPECT_EQ(batcher_->queue_depth(), 3);
  EXPECT_EQ(batcher_->stats().rejected_queue_full, 1);
  runner_.Release();
  clock_.Advance(milliseconds(10));
  log_.WaitForCompletions(4);
  EXPECT_EQ(log_.entries().count(5), 0u);
}

TEST_F(BatcherTest, KeepsEachStreamsJobsInOrderAndApart) {
  Start(Slow());
  batcher_->StreamOpened();
  runner_.Block();
  ASSERT_TRUE(Submit(0, 9).ok());
  runner_.WaitForBatches(1);
  ASSERT_TRUE(Submit(1, 1).ok());
  ASSERT_TRUE(Submit(2, 1).ok());
  ASSERT_TRUE(Submit(3, 1).ok());
  runner_.Release();
  log_.WaitForCompletions(4);
  EXPECT_THAT(runner_.batches(),
              ElementsAre(ElementsAre(0), ElementsAre(1), ElementsAre(2), ElementsAre(3)));
}

TEST_F(BatcherTest, RunnerFailureFailsOnlyThePoisonedHalf) {
  BatcherOptions o = Slow();
  o.grouping = Grouping::kMixed;
  Start(o);
  for (int i = 0; i < 4; ++i) batcher_->StreamOpened();
  runner_.Poison(3);
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(Submit(i, i).ok());
  log_.WaitForCompletions(4);
  EXPECT_TRUE(log_.status(1).ok());
  EXPECT_TRUE(log_.status(2).ok());
  EXPECT_THAT(log_.status(3), StatusIs(absl::StatusCode::kInternal, HasSubstr("poison")));
  EXPECT_THAT(log_.status(4), StatusIs(absl::StatusCode::kInternal, HasSubstr("poison")));
  EXPECT_THAT(runner_.batches(),
              ElementsAre(ElementsAre(1, 2, 3, 4), ElementsAre(1, 2), ElementsAre(3, 4)));
  // The batcher keeps serving.
  ASSERT_TRUE(Submit(5, 1).ok());
  clock_.Advance(milliseconds(50));  // idle_grace: three streams stay silent
  log_.WaitForCompletions(5);
  EXPECT_TRUE(log_.status(5).ok());
}

TEST_F(BatcherTest, OutOfMemorySplitsTheBatchUntilItFits) {
  // Room for 20 padded tokens: 8 jobs of 10 run as 8 (80), 4 (40), then 2s.
  runner_.OutOfMemoryAbove(20);
  auto o = Slow();
  o.max_batch_size = 8;
  Start(o);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(Submit(i, i).ok());
  clock_.Advance(milliseconds(10));  // max_wait
  log_.WaitForCompletions(8);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(log_.status(i).ok()) << "job " << i;
  std::vector<size_t> sizes;
  for (const auto& b : runner_.batches()) sizes.push_back(b.size());
  EXPECT_THAT(sizes, ElementsAre(8, 4, 2, 2, 4, 2, 2));
  const BatcherStats s = batcher_->stats();
  EXPECT_EQ(s.oom_splits, 3);  // 8, and both 4s
  EXPECT_EQ(s.completed_ok, 8);
  EXPECT_EQ(s.failed, 0);
}

TEST_F(BatcherTest, AJobThatDoesNotFitAloneFailsWithoutARetryableCode) {
  runner_.OutOfMemoryAbove(30);
  auto o = Slow();
  o.max_padding_waste = 0.99;  // one batch of three: 3 x 50 = 150 tokens
  Start(o);
  ASSERT_TRUE(Submit(0, 0, Voice("a"), 10).ok());
  ASSERT_TRUE(Submit(1, 1, Voice("a"), 50).ok());  // alone: 50 padded tokens > 30
  ASSERT_TRUE(Submit(2, 2, Voice("a"), 10).ok());
  clock_.Advance(milliseconds(10));
  log_.WaitForCompletions(3);
  EXPECT_TRUE(log_.status(0).ok());
  EXPECT_TRUE(log_.status(2).ok());
  // Not ResourceExhausted: clients retry that, and this chunk fails the same
  // way every time.
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("does not fit in device memory")));
  EXPECT_THAT(log_.status(1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("CUDA out of memory")));
  EXPECT_EQ(batcher_->stats().failed, 1);
}

TEST_F(BatcherTest, RunnerExceptionBecomesInternalError) {
  Start(Slow());
  batcher_->StreamOpened();
  runner_.Throw();
  ASSERT_TRUE(Submit(1, 1).ok());
  log_.WaitForCompletions(1);
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kInternal, HasSubstr("boom")));
}

TEST_F(BatcherTest, ShutdownRunsQueuedJobsThenRefuses) {
  Start(Slow());
  for (int i = 0; i < 2; ++i) batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1).ok());
  clock_.WaitForSleeper();
  batcher_->Shutdown(Batcher::ShutdownMode::kRunQueued);
  EXPECT_TRUE(log_.status(1).ok());
  EXPECT_EQ(log_.entries()[1][0].info.trigger, Trigger::kDrain);
  EXPECT_THAT(Submit(2, 2), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
}

TEST_F(BatcherTest, ShutdownCanFailQueuedJobsWithUnavailable) {
  Start(Slow());
  for (int i = 0; i < 2; ++i) batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1).ok());
  clock_.WaitForSleeper();
  batcher_->Shutdown(Batcher::ShutdownMode::kFailQueued);
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shut down")));
  EXPECT_TRUE(runner_.batches().empty());
}

TEST_F(BatcherTest, StreamClosingWakesAllReady) {
  Start(Slow());
  batcher_->StreamOpened();
  batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1).ok());
  clock_.WaitForSleeper();
  batcher_->StreamClosed();  // the other stream ended: nothing more can arrive
  log_.WaitForCompletions(1);
  EXPECT_EQ(log_.entries()[1][0].info.trigger, Trigger::kAllReady);
}

// Metrics see every decision: batches with their trigger and fill, drains
// with their voice groups, each job's outcome, and rejections.
class RecordingObserver final : public BatcherObserver {
 public:
  void OnReject(RejectReason r) override {
    std::lock_guard lock(mu_);
    rejects.push_back(r);
  }
  void OnJobDone(JobOutcome o, Duration) override {
    std::lock_guard lock(mu_);
    outcomes.push_back(o);
  }
  void OnBatch(const BatchRecord& b) override {
    std::lock_guard lock(mu_);
    batches.push_back(b);
  }
  void OnDrain(int groups, int n) override {
    std::lock_guard lock(mu_);
    drains.emplace_back(groups, n);
  }
  std::mutex mu_;
  std::vector<RejectReason> rejects;
  std::vector<JobOutcome> outcomes;
  std::vector<BatchRecord> batches;
  std::vector<std::pair<int, int>> drains;
};

TEST(BatcherObserverTest, SeesBatchesDrainsOutcomesAndRejections) {
  FakeClock clock;
  FakeRunner runner;
  CompletionLog log;
  RecordingObserver observer;
  BatcherOptions o;
  o.max_batch_size = 4;
  o.max_queue_jobs = 3;
  o.grouping = Grouping::kVoice;
  auto b = Batcher::Create(o, {clock, runner, &observer});
  ASSERT_TRUE(b.ok());
  (*b)->StreamOpened();  // all_ready fires for any waiting job
  runner.Block();
  std::unique_ptr<Job> j1 = std::make_unique<TestJob>(1, 1, Voice("a"), 10, &log);
  ASSERT_TRUE((*b)->Submit(&j1).ok());
  runner.WaitForBatches(1);  // held on the GPU; the next three queue up
  std::unique_ptr<Job> j2 = std::make_unique<TestJob>(2, 1, Voice("a"), 30, &log);
  std::unique_ptr<Job> j3 = std::make_unique<TestJob>(3, 2, Voice("a"), 25, &log);
  std::unique_ptr<Job> j4 = std::make_unique<TestJob>(4, 3, Voice("b"), 10, &log);
  std::unique_ptr<Job> j5 = std::make_unique<TestJob>(5, 3, Voice("b"), 10, &log);
  ASSERT_TRUE((*b)->Submit(&j2).ok());
  ASSERT_TRUE((*b)->Submit(&j3).ok());
  ASSERT_TRUE((*b)->Submit(&j4).ok());
  EXPECT_FALSE((*b)->Submit(&j5).ok());  // max_queue_jobs = 3
  runner.Release();
  log.WaitForCompletions(4);
  (*b)->Shutdown();
  std::lock_guard lock(observer.mu_);
  EXPECT_THAT(observer.rejects, ElementsAre(RejectReason::kQueueFull));
  EXPECT_EQ(observer.outcomes.size(), 4u);
  // Drain 1: job 1 alone. Drain 2: voice a {2, 3} and voice b {4}.
  EXPECT_THAT(observer.drains, ElementsAre(std::pair(1, 1), std::pair(2, 2)));
  ASSERT_EQ(observer.batches.size(), 3u);
  EXPECT_EQ(observer.batches[1].size, 2);
  EXPECT_EQ(observer.batches[1].padded_tokens, 60);  // 2 rows x 30
  EXPECT_EQ(observer.batches[1].real_tokens, 55);
  EXPECT_DOUBLE_EQ(observer.batches[1].fill_ratio(), 0.5);
  EXPECT_EQ(observer.batches[1].trigger, Trigger::kAllReady);
}

TEST(BatcherOptionsTest, CreateRejectsInvalidOptionsNamingTheField) {
  FakeClock clock;
  FakeRunner runner;
  BatcherOptions o;
  o.max_batch_size = 0;
  EXPECT_THAT(Batcher::Create(o, {clock, runner, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_batch_size must be positive; was 0")));
  o = BatcherOptions{};
  o.early_fire_fraction = 1.5;
  EXPECT_THAT(Batcher::Create(o, {clock, runner, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("early_fire_fraction")));
  o = BatcherOptions{};
  o.max_padding_waste = 1.0;
  EXPECT_THAT(Batcher::Create(o, {clock, runner, nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_padding_waste")));
}

// Random cancellations, runner failures and a shutdown in the middle, on the
// real clock, with several producers submitting at once (a Submit from one
// thread can be in flight while Shutdown and the GPU thread's exit check run
// on others): every accepted job completes exactly once, by the time
// Shutdown returns. Many short rounds, so shutdown lands at many points.
TEST(BatcherChaosTest, EveryAcceptedJobCompletesExactlyOnce) {
  constexpr int kProducers = 4;
  constexpr int kJobsPerProducer = 200;
  constexpr int kRounds = 40;
  for (auto mode : {Batcher::ShutdownMode::kRunQueued, Batcher::ShutdownMode::kFailQueued}) {
    for (int round = 0; round < kRounds; ++round) {
      SystemClock clock;
      FakeRunner runner;
      CompletionLog log;
      BatcherOptions o;
      o.max_batch_size = 8;
      o.max_queue_jobs = 64;
      o.idle_grace = microseconds(50);
      auto b = Batcher::Create(o, {clock, runner, nullptr});
      ASSERT_TRUE(b.ok());
      Batcher& batcher = **b;
      for (int id = 0; id < kProducers * kJobsPerProducer; id += 97) runner.Poison(id);
      std::latch start(kProducers + 1);
      std::atomic<int> attempted{0};
      std::vector<std::set<int>> accepted(kProducers);
      std::vector<std::thread> producers;
      for (int p = 0; p < kProducers; ++p) {
        producers.emplace_back([&, p] {
          std::mt19937 rng(static_cast<uint32_t>(1000 * round + p));
          start.arrive_and_wait();
          for (int i = 0; i < kJobsPerProducer; ++i) {
            const int id = p * kJobsPerProducer + i;
            auto cancel = std::make_shared<Cancellation>();
            const TimePoint deadline =
                rng() % 5 == 0 ? clock.Now() + microseconds(rng() % 200) : kNever;
            std::unique_ptr<Job> job = std::make_unique<TestJob>(
                id, static_cast<uint64_t>(p * 16 + i % 4), Voice(std::to_string(i % 3)),
                1 + rng() % 50, &log, deadline, cancel);
            const bool ok = batcher.Submit(&job).ok();
            EXPECT_EQ(ok, job == nullptr) << "Submit must take ownership iff it returns OK";
            if (ok) accepted[p].insert(id);
            if (rng() % 4 == 0) cancel->Cancel();
            attempted.fetch_add(1);
          }
        });
      }
      start.arrive_and_wait();
      // Shut down while the producers are still submitting, at a point that
      // moves from round to round.
      const int stop_after = (round * 131) % (kProducers * kJobsPerProducer / 2);
      while (attempted.load() < stop_after) std::this_thread::yield();
      batcher.Shutdown(mode);
      for (auto& t : producers) t.join();
      // Every job accepted was completed before Shutdown returned (producers
      // that were still submitting were refused, never left queued).
      const auto entries = log.entries();
      size_t total = 0;
      for (int p = 0; p < kProducers; ++p) {
        total += accepted[p].size();
        for (int id : accepted[p]) {
          ASSERT_EQ(entries.count(id), 1u)
              << "job " << id << " never completed (round " << round << ")";
          EXPECT_EQ(entries.at(id).size(), 1u) << "job " << id << " completed twice";
        }
      }
      EXPECT_EQ(entries.size(), total);
      const BatcherStats s = batcher.stats();
      EXPECT_EQ(s.completed_ok + s.failed + s.expired + s.cancelled + s.shutdown,
                static_cast<int64_t>(total));
      EXPECT_EQ(s.rejected_shutting_down + static_cast<int64_t>(total) + s.rejected_queue_full,
                kProducers * kJobsPerProducer);
      EXPECT_EQ(batcher.queue_depth(), 0);
    }
  }
}

}  // namespace
}  // namespace vocoder::batcher

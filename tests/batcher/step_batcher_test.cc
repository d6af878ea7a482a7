// The step-scheduling loop (Scheduling::kStep) with a fake clock and a fake
// StepRunner: jobs join between steps, rows leave when their own schedule is
// done or their job is gone, failures fail only what they must, and every job
// completes exactly once (batcher.h, "STEP SCHEDULING"). No sleeps.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "batcher/batcher.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/fake_step_runner.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::batcher {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using vocoder::testing::CompletionLog;
using vocoder::testing::FakeClock;
using vocoder::testing::FakeRunner;
using vocoder::testing::FakeStepRunner;
using vocoder::testing::StatusIs;
using vocoder::testing::TestJob;

BatchKey Key(uint32_t steps, const std::string& voice = "a") {
  return BatchKey{FingerprintBytes(voice.data(), voice.size()), steps};
}

BatcherOptions StepOptions() {
  BatcherOptions o;
  o.scheduling = Scheduling::kStep;
  o.max_batch_size = 4;
  o.idle_grace = std::chrono::microseconds(0);  // an empty set starts at once
  o.max_wait = milliseconds(10);
  o.max_padding_waste = 0.5;
  // Free stages: no deadline trigger before a test's deadline itself.
  o.initial_batch_cost = std::chrono::microseconds(0);
  o.initial_cost_per_token = std::chrono::nanoseconds(0);
  return o;
}

class StepBatcherTest : public ::testing::Test {
 protected:
  void Start(BatcherOptions options = StepOptions()) {
    auto b = Batcher::Create(options, {clock_, batch_runner_, nullptr, &runner_});
    ASSERT_TRUE(b.ok()) << b.status();
    batcher_ = std::move(*b);
  }
  // An empty set starts only once `streams` jobs are queued (all_ready).
  void StartWithStreams(int streams) {
    BatcherOptions o = StepOptions();
    o.idle_grace = std::chrono::seconds(1);
    Start(o);
    for (int i = 0; i < streams; ++i) batcher_->StreamOpened();
  }
  // Submits probes until one is refused as shutting down (each accepted
  // probe is one more job to complete); returns how many were accepted.
  int ProbeUntilStopping() {
    int accepted = 0;
    while (true) {
      const absl::Status s = Submit(1000 + accepted, 1000 + accepted, 1);
      if (s.ok()) {
        ++accepted;
      } else if (s.code() == absl::StatusCode::kUnavailable) {
        return accepted;
      } else {
        std::this_thread::yield();  // queue full: the stopper is on its way
      }
    }
  }
  absl::Status Submit(int id, uint64_t stream, uint32_t steps, int64_t cost = 10,
                      TimePoint deadline = kNever,
                      std::shared_ptr<const Cancellation> cancel = nullptr,
                      const std::string& voice = "a") {
    std::unique_ptr<Job> job = std::make_unique<TestJob>(id, stream, Key(steps, voice), cost, &log_,
                                                         deadline, std::move(cancel));
    absl::Status s = batcher_->Submit(&job);
    EXPECT_EQ(s.ok(), job == nullptr) << "Submit must take ownership iff it returns OK";
    return s;
  }
  void TearDown() override {
    if (batcher_) batcher_->Shutdown();
    EXPECT_THAT(runner_.violations(), IsEmpty());
    EXPECT_THAT(runner_.rows(), IsEmpty());
    for (const auto& [id, entries] : log_.entries()) {
      EXPECT_EQ(entries.size(), 1u) << "job " << id << " completed " << entries.size() << " times";
    }
    EXPECT_TRUE(batch_runner_.batches().empty()) << "step mode ran a whole batch";
  }

  FakeClock clock_;
  FakeRunner batch_runner_;
  FakeStepRunner runner_;
  CompletionLog log_;
  std::unique_ptr<Batcher> batcher_;
};

TEST(StepBatcherCreateTest, NeedsAStepRunnerAndMixedGrouping) {
  FakeClock clock;
  FakeRunner runner;
  FakeStepRunner step;
  BatcherOptions o = StepOptions();
  EXPECT_THAT(Batcher::Create(o, {clock, runner, nullptr, nullptr}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("StepRunner")));
  o.grouping = Grouping::kVoice;
  EXPECT_THAT(Batcher::Create(o, {clock, runner, nullptr, &step}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("grouping")));
}

TEST_F(StepBatcherTest, ALoneJobTakesItsOwnNumberOfSteps) {
  Start();
  batcher_->StreamOpened();
  ASSERT_TRUE(Submit(1, 1, 3).ok());
  log_.WaitForCompletions(1);
  EXPECT_TRUE(log_.status(1).ok());
  EXPECT_THAT(runner_.step_rows(), ElementsAre(1, 1, 1));
  EXPECT_THAT(runner_.retired(), ElementsAre(1));
  const BatchInfo info = log_.entries()[1][0].info;
  EXPECT_EQ(info.trigger, Trigger::kAllReady);
  EXPECT_EQ(info.batch_size, 1);
  EXPECT_EQ(info.queue_wait, Duration::zero());
  const BatcherStats s = batcher_->stats();
  EXPECT_EQ(s.steps, 3);
  EXPECT_EQ(s.decided(StepReason::kStart), 1);
  EXPECT_EQ(s.decided(StepReason::kStep), 2);
  EXPECT_EQ(s.completed_ok, 1);
}

TEST_F(StepBatcherTest, AJobArrivingMidSolveJoinsAtTheNextStepBoundary) {
  runner_.Block();
  Start();
  ASSERT_TRUE(Submit(1, 1, 4, 10, kNever, nullptr, "a").ok());
  runner_.WaitForSteps(1);
  clock_.Advance(milliseconds(3));
  ASSERT_TRUE(Submit(2, 2, 2, 10, kNever, nullptr, "b").ok());
  runner_.Release();
  log_.WaitForCompletions(2);
  EXPECT_THAT(runner_.admits(), ElementsAre(ElementsAre(1), ElementsAre(2)));
  // Step 1: job 1 alone; steps 2-3: both; job 2 retires after its 2 steps;
  // step 4: job 1 alone again.
  EXPECT_THAT(runner_.step_rows(), ElementsAre(1, 2, 2, 1));
  EXPECT_THAT(log_.order(), ElementsAre(2, 1));
  EXPECT_EQ(log_.entries()[2][0].info.trigger, Trigger::kJoin);
  EXPECT_EQ(log_.entries()[2][0].info.batch_size, 2);
  EXPECT_EQ(log_.entries()[2][0].info.queue_wait, Duration::zero());
  EXPECT_EQ(log_.entries()[1][0].info.compute, milliseconds(3));
  const BatcherStats s = batcher_->stats();
  EXPECT_EQ(s.decided(StepReason::kJoin), 1);
  EXPECT_DOUBLE_EQ(s.mean_running_rows(), 1.5);
  EXPECT_EQ(s.running_rows.at(2), 2);
}

TEST_F(StepBatcherTest, AStreamsNextChunkWaitsForItsRunningOne) {
  Start();
  runner_.Block();
  ASSERT_TRUE(Submit(1, 7, 2).ok());
  runner_.WaitForSteps(1);
  ASSERT_TRUE(Submit(2, 7, 2).ok());
  runner_.Release();
  log_.WaitForCompletions(2);
  EXPECT_THAT(runner_.admits(), ElementsAre(ElementsAre(1), ElementsAre(2)));
  EXPECT_THAT(runner_.step_rows(), ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(log_.order(), ElementsAre(1, 2));
}

TEST_F(StepBatcherTest, CancelledAndExpiredRowsLeaveAtTheNextBoundary) {
  auto cancel = std::make_shared<Cancellation>();
  runner_.Block();
  StartWithStreams(3);
  ASSERT_TRUE(Submit(1, 1, 10, 10, kNever, cancel).ok());
  ASSERT_TRUE(Submit(2, 2, 10, 10, clock_.Now() + milliseconds(5)).ok());
  ASSERT_TRUE(Submit(3, 3, 3).ok());
  runner_.WaitForSteps(1);
  cancel->Cancel();
  clock_.Advance(milliseconds(5));
  runner_.Release();
  log_.WaitForCompletions(3);
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kCancelled, HasSubstr("vocoded")));
  EXPECT_THAT(log_.status(2), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("vocoded")));
  EXPECT_TRUE(log_.status(3).ok());
  EXPECT_THAT(runner_.dropped(), UnorderedElementsAre(1, 2));
  EXPECT_THAT(runner_.step_rows(), ElementsAre(3, 1, 1));  // not ten steps for the dead
  EXPECT_EQ(log_.entries()[1][0].info.compute, milliseconds(5));
  EXPECT_EQ(batcher_->stats().cancelled, 1);
  EXPECT_EQ(batcher_->stats().expired, 1);
}

TEST_F(StepBatcherTest, APoisonJobFailsAdmissionOnlyForItsHalf) {
  runner_.Poison(3);
  StartWithStreams(4);
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(Submit(i, i, 2).ok());
  log_.WaitForCompletions(4);
  EXPECT_TRUE(log_.status(1).ok());
  EXPECT_TRUE(log_.status(2).ok());
  EXPECT_THAT(log_.status(3), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("poison")));
  EXPECT_THAT(log_.status(4), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("poison")));
  EXPECT_THAT(runner_.admits(),
              ElementsAre(ElementsAre(1, 2, 3, 4), ElementsAre(1, 2), ElementsAre(3, 4)));
  EXPECT_THAT(runner_.retired(), UnorderedElementsAre(1, 2));
}

TEST_F(StepBatcherTest, AFailedStepFailsEveryRunningRowAndOnlyThem) {
  runner_.FailStep(2);
  runner_.Block();
  StartWithStreams(2);
  ASSERT_TRUE(Submit(1, 1, 5).ok());
  ASSERT_TRUE(Submit(2, 2, 5).ok());
  runner_.WaitForSteps(1);
  batcher_->StreamOpened();
  ASSERT_TRUE(Submit(3, 3, 5).ok());  // joins at the boundary before step 2
  runner_.Release();
  log_.WaitForCompletions(3);
  for (int id : {1, 2, 3}) {
    EXPECT_THAT(log_.status(id), StatusIs(absl::StatusCode::kInternal, HasSubstr("step 2")));
  }
  batcher_->StreamClosed();
  batcher_->StreamClosed();           // one stream left: its job starts a set at once
  ASSERT_TRUE(Submit(4, 4, 2).ok());  // the set works again
  log_.WaitForCompletions(4);
  EXPECT_TRUE(log_.status(4).ok());
  EXPECT_THAT(runner_.step_rows(), ElementsAre(2, 3, 1, 1));
}

TEST_F(StepBatcherTest, AFailedRetireFailsOnlyTheRetiringRows) {
  runner_.PoisonRetire(1);
  StartWithStreams(2);
  ASSERT_TRUE(Submit(1, 1, 2).ok());
  ASSERT_TRUE(Submit(2, 2, 4).ok());
  log_.WaitForCompletions(2);
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kInternal, HasSubstr("HiFT")));
  EXPECT_TRUE(log_.status(2).ok());
  EXPECT_THAT(runner_.step_rows(), ElementsAre(2, 2, 1, 1));
}

TEST_F(StepBatcherTest, OutOfMemoryOnAdmitSplitsAndDefersWhatFitsOnlyAlone) {
  runner_.OutOfMemoryAbove(2);
  StartWithStreams(4);
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(Submit(i, i, 2).ok());
  // Streams close as their jobs finish, so all_ready starts each new set.
  log_.WaitForCompletions(2);
  batcher_->StreamClosed();
  batcher_->StreamClosed();
  log_.WaitForCompletions(3);
  batcher_->StreamClosed();
  log_.WaitForCompletions(4);
  for (int id : {1, 2, 3, 4}) EXPECT_TRUE(log_.status(id).ok()) << id;
  // 4 rows: out of memory; halves: {1, 2} joins, {3, 4} does not fit beside
  // them, nor do 3 and 4 one by one: both wait for an empty set, then start
  // one alone each (the second one cannot join the first).
  EXPECT_THAT(runner_.admits(),
              ElementsAre(ElementsAre(1, 2, 3, 4), ElementsAre(1, 2), ElementsAre(3, 4),
                          ElementsAre(3), ElementsAre(4), ElementsAre(3), ElementsAre(4)));
  EXPECT_EQ(runner_.max_rows(), 2);
  EXPECT_EQ(batcher_->stats().decided(StepReason::kAlone), 2);  // beside {1, 2}, beside {3}
}

TEST_F(StepBatcherTest, AJobTooBigEvenAloneFailsWithFailedPrecondition) {
  runner_.OutOfMemoryAbove(-1);  // nothing fits
  Start();
  ASSERT_TRUE(Submit(1, 1, 2).ok());
  log_.WaitForCompletions(1);
  EXPECT_THAT(log_.status(1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("even in a batch of its own")));
}

TEST_F(StepBatcherTest, ShutdownRunQueuedFinishesRunningAndQueuedJobs) {
  runner_.Block();
  Start();
  ASSERT_TRUE(Submit(1, 1, 3).ok());
  runner_.WaitForSteps(1);
  ASSERT_TRUE(Submit(2, 1, 3).ok());  // queued behind its stream's running job
  ASSERT_TRUE(Submit(3, 2, 3).ok());
  std::thread stopper([&] { batcher_->Shutdown(Batcher::ShutdownMode::kRunQueued); });
  // Once Submit is refused, the batcher is stopping: then let the step end.
  const int probes = ProbeUntilStopping();
  runner_.Release();
  stopper.join();
  for (int id : {1, 2, 3}) EXPECT_TRUE(log_.status(id).ok()) << id;
  EXPECT_EQ(log_.entries()[2][0].info.trigger, Trigger::kDrain);
  EXPECT_EQ(batcher_->stats().completed_ok, probes + 3);
}

TEST_F(StepBatcherTest, ShutdownFailQueuedFailsRunningAndQueuedJobs) {
  runner_.Block();
  StartWithStreams(2);
  ASSERT_TRUE(Submit(1, 1, 3).ok());
  ASSERT_TRUE(Submit(2, 2, 3).ok());
  runner_.WaitForSteps(1);
  ASSERT_TRUE(Submit(3, 1, 3).ok());
  std::thread stopper([&] { batcher_->Shutdown(Batcher::ShutdownMode::kFailQueued); });
  const int probes = ProbeUntilStopping();
  runner_.Release();
  stopper.join();
  for (int id : {1, 2, 3}) {
    EXPECT_THAT(log_.status(id), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shut down")));
  }
  EXPECT_THAT(runner_.dropped(), UnorderedElementsAre(1, 2));
  EXPECT_THAT(runner_.retired(), IsEmpty());
  EXPECT_EQ(batcher_->stats().shutdown, probes + 3);
}

// Exactly once under random admission, cancellation, expiry, out-of-memory and
// failures injected at random calls: a seeded hook acts at every runner call
// (on the GPU thread) while this thread submits; then a random shutdown.
TEST_F(StepBatcherTest, EveryJobCompletesExactlyOnceUnderRandomFaults) {
  for (int seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 main_rng(seed);
    FakeClock clock;
    FakeRunner batch_runner;
    FakeStepRunner runner;
    CompletionLog log;
    constexpr int kStreams = 6;
    std::vector<std::shared_ptr<Cancellation>> cancels;
    for (int i = 0; i < kStreams; ++i) cancels.push_back(std::make_shared<Cancellation>());
    std::mt19937 hook_rng(seed + 1000);  // GPU thread only
    runner.SetHook([&](FakeStepRunner::Call call) -> absl::Status {
      std::uniform_int_distribution<int> pct(0, 99);
      clock.Advance(std::chrono::microseconds(pct(hook_rng) * 20));
      if (pct(hook_rng) < 4) cancels[pct(hook_rng) % kStreams]->Cancel();
      const int fail = pct(hook_rng);
      if (call == FakeStepRunner::Call::kAdmit && fail < 6) return absl::InternalError("admit");
      if (call == FakeStepRunner::Call::kStep && fail < 3) return absl::InternalError("step");
      if (call == FakeStepRunner::Call::kRetire && fail < 5) return absl::InternalError("retire");
      return absl::OkStatus();
    });
    std::uniform_int_distribution<int> pct(0, 99);
    if (pct(main_rng) < 30) runner.OutOfMemoryAbove(1 + pct(main_rng) % 4);
    BatcherOptions o = StepOptions();
    o.max_batch_size = 1 + pct(main_rng) % 6;
    o.bisect_failures = pct(main_rng) < 50;
    o.max_padding_waste = 0.2;
    o.max_wait = milliseconds(1);
    auto created = Batcher::Create(o, {clock, batch_runner, nullptr, &runner});
    ASSERT_TRUE(created.ok());
    std::unique_ptr<Batcher> batcher = std::move(*created);

    constexpr int kJobs = 60;
    std::set<int> accepted;
    std::map<int, int> stream_of;
    for (int id = 0; id < kJobs; ++id) {
      if (pct(main_rng) < 5) runner.Poison(id);
      const int stream = pct(main_rng) % kStreams;
      const TimePoint deadline = pct(main_rng) < 40
                                     ? clock.Now() + std::chrono::microseconds(pct(main_rng) * 100)
                                     : kNever;
      std::unique_ptr<Job> job =
          std::make_unique<TestJob>(id, stream, Key(1 + pct(main_rng) % 5, std::to_string(stream)),
                                    5 + pct(main_rng) % 40, &log, deadline, cancels[stream]);
      const absl::Status s = batcher->Submit(&job);
      ASSERT_EQ(s.ok(), job == nullptr);
      if (s.ok()) {
        accepted.insert(id);
        stream_of[id] = stream;
      }
    }
    if (pct(main_rng) < 50) log.WaitForCompletions(accepted.size());
    const auto mode =
        pct(main_rng) < 50 ? Batcher::ShutdownMode::kRunQueued : Batcher::ShutdownMode::kFailQueued;
    batcher->Shutdown(mode);

    const auto entries = log.entries();
    EXPECT_EQ(entries.size(), accepted.size());
    for (int id : accepted) {
      auto it = entries.find(id);
      ASSERT_NE(it, entries.end()) << "job " << id << " never completed";
      ASSERT_EQ(it->second.size(), 1u) << "job " << id;
      const absl::Status& st = it->second[0].status;
      if (st.ok()) {
        EXPECT_THAT(runner.retired(), ::testing::Contains(id));
      }
      if (st.code() == absl::StatusCode::kCancelled) {
        EXPECT_TRUE(cancels[stream_of[id]]->cancelled());
      }
    }
    EXPECT_THAT(runner.violations(), IsEmpty());
    EXPECT_THAT(runner.rows(), IsEmpty());
    // Streams keep their order: a stream's jobs were admitted in submission order.
    std::map<int, int> last_admitted;
    for (const auto& admit : runner.admits()) {
      for (int id : admit) {
        auto [it, inserted] = last_admitted.try_emplace(stream_of[id], id);
        if (!inserted) {
          EXPECT_LE(it->second, id) << "stream " << stream_of[id];
          it->second = id;
        }
      }
    }
    const BatcherStats s = batcher->stats();
    EXPECT_EQ(s.completed_ok + s.failed + s.expired + s.cancelled + s.shutdown,
              static_cast<int64_t>(accepted.size()));
  }
}

}  // namespace
}  // namespace vocoder::batcher

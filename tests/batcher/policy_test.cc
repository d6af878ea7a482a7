// The batching decision as a pure function: each trigger fires exactly when
// it should and not a tick earlier.
#include "batcher/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vocoder::batcher {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using ::testing::ElementsAre;

const TimePoint kT0 = TimePoint(std::chrono::seconds(100));
constexpr nanoseconds kTick{1};

BatcherOptions Opts() {
  BatcherOptions o;
  o.max_batch_size = 8;
  o.early_fire_fraction = 0.75;
  o.idle_grace = microseconds(200);
  o.max_wait = milliseconds(10);
  o.max_padding_waste = 0.5;
  return o;
}

// A zero-cost model unless a test sets one: deadlines then mean "at the deadline".
CostModel FreeCost() { return CostModel(Duration::zero(), Duration::zero()); }

QueueView View(int jobs, TimePoint enqueued = kT0, int active_streams = 0) {
  QueueView v;
  v.groups.push_back(GroupView{});
  for (int i = 0; i < jobs; ++i) {
    v.groups[0].jobs.push_back(PendingJob{static_cast<uint64_t>(i), enqueued, kNever, 10});
  }
  v.active_streams = active_streams;
  v.last_arrival = enqueued;
  return v;
}

TEST(PolicyTest, FullFiresAtMaxBatchSize) {
  BatcherOptions o = Opts();
  o.early_fire_fraction = 1.0;
  EXPECT_FALSE(Decide(View(7), kT0, o, FreeCost()).run);
  const Decision d = Decide(View(8), kT0, o, FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kFull);
  ASSERT_EQ(d.batches.size(), 1u);
  EXPECT_EQ(d.batches[0].jobs.size(), 8u);
}

TEST(PolicyTest, FullOverflowSplitsIntoSeveralBatches) {
  const Decision d = Decide(View(19), kT0, Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kFull);
  ASSERT_EQ(d.batches.size(), 3u);
  EXPECT_EQ(d.batches[0].jobs.size(), 8u);
  EXPECT_EQ(d.batches[1].jobs.size(), 8u);
  EXPECT_EQ(d.batches[2].jobs.size(), 3u);
}

TEST(PolicyTest, TokenBudgetCountsPaddedRows) {
  BatcherOptions o = Opts();
  o.early_fire_fraction = 1.0;
  o.max_batch_tokens = 40;  // 4 rows of 10
  EXPECT_FALSE(Decide(View(3), kT0, o, FreeCost()).run);
  const Decision d = Decide(View(4), kT0, o, FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kFull);
  EXPECT_EQ(d.batches[0].padded_tokens, 40);
}

TEST(PolicyTest, NearFullFiresAtEarlyFireFractionNotAJobEarlier) {
  // 0.75 * 8 = 6 jobs.
  EXPECT_FALSE(Decide(View(5), kT0, Opts(), FreeCost()).run);
  const Decision d = Decide(View(6), kT0, Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kNearFull);
}

TEST(PolicyTest, AllReadyFiresWhenEveryActiveStreamWaits) {
  EXPECT_FALSE(Decide(View(2, kT0, /*active_streams=*/3), kT0, Opts(), FreeCost()).run);
  const Decision d = Decide(View(3, kT0, 3), kT0, Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kAllReady);
}

TEST(PolicyTest, LoneStreamRunsAtOnce) {
  const Decision d = Decide(View(1, kT0, /*active_streams=*/1), kT0, Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kAllReady);
}

TEST(PolicyTest, IdleFiresAfterGraceNotATickEarlier) {
  const QueueView v = View(1);
  const Decision wait = Decide(v, kT0 + microseconds(200) - kTick, Opts(), FreeCost());
  ASSERT_FALSE(wait.run);
  EXPECT_EQ(wait.wait_until, kT0 + microseconds(200));
  const Decision d = Decide(v, kT0 + microseconds(200), Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kIdle);
}

TEST(PolicyTest, MaxWaitFiresWhileArrivalsKeepTrickling) {
  QueueView v = View(2);
  v.groups[0].jobs[1].enqueued = kT0 + milliseconds(9);
  v.last_arrival = kT0 + milliseconds(9) + microseconds(900);  // arrivals keep idle from firing
  const Decision wait = Decide(v, kT0 + milliseconds(10) - kTick, Opts(), FreeCost());
  ASSERT_FALSE(wait.run);
  EXPECT_EQ(wait.wait_until, kT0 + milliseconds(10));
  const Decision d = Decide(v, kT0 + milliseconds(10), Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kMaxWait);
}

TEST(PolicyTest, DeadlineFiresAtDeadlineMinusPredictedRunTime) {
  BatcherOptions o = Opts();
  o.idle_grace = milliseconds(100);
  o.max_wait = milliseconds(100);
  QueueView v = View(1);
  v.groups[0].jobs[0].deadline = kT0 + milliseconds(50);
  // 2 ms fixed + 0.1 ms per padded token: 10 tokens -> 3 ms.
  const CostModel cost(milliseconds(2), microseconds(100));
  const Decision wait = Decide(v, kT0 + milliseconds(47) - kTick, o, cost);
  ASSERT_FALSE(wait.run);
  EXPECT_EQ(wait.wait_until, kT0 + milliseconds(47));
  const Decision d = Decide(v, kT0 + milliseconds(47), o, cost);
  ASSERT_TRUE(d.run);
  EXPECT_EQ(d.trigger, Trigger::kDeadline);
}

TEST(PolicyTest, GroupWithEarliestDeadlineRunsFirst) {
  QueueView v;
  v.groups.resize(3);
  v.groups[0].key.compat = 0;
  v.groups[0].jobs = {PendingJob{1, kT0, kNever, 10}};
  v.groups[1].key.compat = 1;
  v.groups[1].jobs = {PendingJob{2, kT0 + milliseconds(1), kT0 + milliseconds(30), 10}};
  v.groups[2].key.compat = 2;
  v.groups[2].jobs = {PendingJob{3, kT0 + milliseconds(2), kT0 + milliseconds(20), 10}};
  v.active_streams = 3;
  const Decision d = Decide(v, kT0 + milliseconds(2), Opts(), FreeCost());
  ASSERT_TRUE(d.run);
  ASSERT_EQ(d.batches.size(), 3u);
  EXPECT_EQ(d.batches[0].group, 2);
  EXPECT_EQ(d.batches[1].group, 1);
  EXPECT_EQ(d.batches[2].group, 0);
}

TEST(PolicyTest, SplitsByLengthWhenPaddingWasteWouldExceedLimit) {
  GroupView g;
  for (int64_t cost : {10, 100, 12, 95, 11}) {
    g.jobs.push_back(PendingJob{static_cast<uint64_t>(g.jobs.size()), kT0, kNever, cost});
  }
  BatcherOptions o = Opts();
  o.max_padding_waste = 0.2;
  const auto batches = PlanGroup(g, 0, o);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_THAT(batches[0].jobs, ElementsAre(1, 3));     // 100, 95
  EXPECT_THAT(batches[1].jobs, ElementsAre(2, 4, 0));  // 12, 11, 10
  EXPECT_EQ(batches[0].padded_tokens, 200);
  EXPECT_EQ(batches[0].real_tokens, 195);
  EXPECT_EQ(batches[1].padded_tokens, 36);
}

TEST(PolicyTest, ZeroWasteToleranceKeepsOnlyEqualLengthsTogether) {
  BatcherOptions o = Opts();
  o.max_padding_waste = 0.0;
  GroupView g;
  for (int64_t cost : {10, 10, 11}) {
    g.jobs.push_back(PendingJob{static_cast<uint64_t>(g.jobs.size()), kT0, kNever, cost});
  }
  const auto batches = PlanGroup(g, 0, o);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_THAT(batches[0].jobs, ElementsAre(2));
  EXPECT_THAT(batches[1].jobs, ElementsAre(0, 1));
}

TEST(PolicyTest, WaitsUntilEarliestTimer) {
  BatcherOptions o = Opts();
  o.idle_grace = milliseconds(3);
  QueueView v = View(1);
  v.groups[0].jobs[0].deadline = kT0 + milliseconds(2);
  EXPECT_EQ(Decide(v, kT0, o, FreeCost()).wait_until, kT0 + milliseconds(2));
  v.groups[0].jobs[0].deadline = kNever;
  EXPECT_EQ(Decide(v, kT0, o, FreeCost()).wait_until, kT0 + milliseconds(3));
}

TEST(CostModelTest, LearnsFixedAndPerTokenCostFromMeasurements) {
  CostModel m(milliseconds(50), Duration::zero());
  for (int i = 0; i < 50; ++i) {
    const int64_t tokens = 100 * (1 + i % 8);
    m.Observe(tokens, milliseconds(4) + microseconds(10) * tokens);
  }
  EXPECT_NEAR(m.fixed_seconds(), 0.004, 1e-6);
  EXPECT_NEAR(m.per_token_seconds(), 10e-6, 1e-9);
  EXPECT_NEAR(std::chrono::duration<double>(m.Predict(1000)).count(), 0.014, 1e-6);
}

}  // namespace
}  // namespace vocoder::batcher

// The step-scheduling decision as a pure function (step_policy.h), rule by
// rule, and the stage cost model it reads (stage_cost_model.h).
#include "batcher/step_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "batcher/stage_cost_model.h"

namespace vocoder::batcher {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

const TimePoint kT0 = TimePoint(std::chrono::seconds(100));
constexpr nanoseconds kTick{1};

BatcherOptions Opts() {
  BatcherOptions o;
  o.scheduling = Scheduling::kStep;
  o.max_batch_size = 8;
  o.early_fire_fraction = 0.75;
  o.idle_grace = microseconds(200);
  o.max_wait = milliseconds(10);
  o.max_padding_waste = 0.3;
  o.join_amortization = 0;  // rule 4 (cohorts) has its own tests, which turn it on
  return o;
}

BatcherOptions Cohorts() {
  BatcherOptions o = Opts();
  o.join_amortization = 1;
  return o;
}

// Every stage takes `each`, whatever the shape: no cap (per-row step time
// only falls), deadlines easy to compute.
StageCostModel Flat(Duration each = Duration::zero()) {
  return StageCostModel(each, Duration::zero());
}

StepCandidate Queued(uint64_t stream, int64_t cost = 10, TimePoint enqueued = kT0,
                     TimePoint deadline = kNever, int n = 10) {
  return StepCandidate{stream, enqueued, deadline, cost, n, false};
}

StepView Running(int rows, int64_t cost = 10, int steps_left = 5) {
  StepView v;
  for (int i = 0; i < rows; ++i) v.running.push_back(RunningRow{cost, steps_left, kNever});
  v.last_arrival = kT0;
  return v;
}

// The step cost of a device where one step per row is cheapest at 8 rows of
// 100 tokens: 4 ms fixed + c x^2 with c = 4 ms / (64 * 100^2) per token^2.
StageCostModel Superlinear() {
  StageCostModel m(milliseconds(1), Duration::zero());
  const double c = 4e-3 / (64.0 * 100 * 100);
  for (int round = 0; round < 4; ++round) {
    for (int r = 1; r <= 32; ++r) {
      const double x = r * 100.0;
      m.ObserveStep(
          r, 100,
          std::chrono::duration_cast<Duration>(std::chrono::duration<double>(4e-3 + c * x * x)));
    }
  }
  return m;
}

TEST(StepPolicyTest, EmptySetWaitsForMaxWaitOrIdle) {
  StepView v;
  v.queued.push_back(Queued(1));
  v.active_streams = 3;
  v.last_arrival = kT0 + milliseconds(9);
  StepDecision d = DecideStep(v, kT0 + milliseconds(9), Opts(), Flat());
  EXPECT_TRUE(d.wait);
  EXPECT_EQ(d.reason, StepReason::kWait);
  EXPECT_EQ(d.wait_until, kT0 + milliseconds(9) + microseconds(200));
  d = DecideStep(v, kT0 + milliseconds(9) + microseconds(200) - kTick, Opts(), Flat());
  EXPECT_TRUE(d.wait);
  d = DecideStep(v, kT0 + milliseconds(9) + microseconds(200), Opts(), Flat());
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.reason, StepReason::kStart);
  EXPECT_EQ(d.trigger, Trigger::kIdle);
  EXPECT_THAT(d.admit, ElementsAre(0));

  v.last_arrival = kT0 + milliseconds(10);
  d = DecideStep(v, kT0 + milliseconds(10), Opts(), Flat());
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.trigger, Trigger::kMaxWait);
}

TEST(StepPolicyTest, EmptySetStartsWhenAllStreamsAreReady) {
  StepView v;
  v.queued = {Queued(1), Queued(2)};
  v.active_streams = 2;
  v.last_arrival = kT0;
  const StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.trigger, Trigger::kAllReady);
  EXPECT_THAT(d.admit, ElementsAre(0, 1));
}

TEST(StepPolicyTest, EmptySetStartsWhenNearFullOfTheCap) {
  StepView v;
  for (int i = 0; i < 6; ++i) v.queued.push_back(Queued(i));
  v.last_arrival = kT0;
  const StepDecision d = DecideStep(v, kT0, Opts(), Flat());  // 6 / 8 >= 0.75
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.trigger, Trigger::kNearFull);
  v.queued.pop_back();
  EXPECT_TRUE(DecideStep(v, kT0, Opts(), Flat()).wait);
}

TEST(StepPolicyTest, EmptySetStartsForADeadlineWithTheWholeSolvePredicted) {
  // 1 ms per stage: encoder + 4 steps + HiFT = 6 ms before the deadline.
  StepView v;
  v.queued.push_back(Queued(1, 10, kT0, kT0 + milliseconds(8), 4));
  v.last_arrival = kT0;
  StepDecision d = DecideStep(v, kT0, Opts(), Flat(milliseconds(1)));
  ASSERT_TRUE(d.wait);
  EXPECT_EQ(d.wait_until, kT0 + microseconds(200));  // idle comes first
  BatcherOptions o = Opts();
  o.idle_grace = milliseconds(100);
  d = DecideStep(v, kT0, o, Flat(milliseconds(1)));
  EXPECT_EQ(d.wait_until, kT0 + milliseconds(2));
  d = DecideStep(v, kT0 + milliseconds(2), o, Flat(milliseconds(1)));
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.trigger, Trigger::kDeadline);
}

TEST(StepPolicyTest, DrainStartsAtOnce) {
  StepView v;
  v.queued.push_back(Queued(1));
  v.active_streams = 5;
  v.draining = true;
  const StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.trigger, Trigger::kDrain);
  EXPECT_EQ(d.reason, StepReason::kStart);
}

TEST(StepPolicyTest, NothingToDoWaitsForever) {
  const StepDecision d = DecideStep(StepView{}, kT0, Opts(), Flat());
  EXPECT_TRUE(d.wait);
  EXPECT_EQ(d.wait_until, kNever);
}

TEST(StepPolicyTest, RunningRowsStepWithoutWaiting) {
  const StepDecision d = DecideStep(Running(3), kT0, Opts(), Flat());
  EXPECT_FALSE(d.wait);
  EXPECT_EQ(d.reason, StepReason::kStep);
  EXPECT_THAT(d.admit, IsEmpty());
}

TEST(StepPolicyTest, QueuedJobsJoinAtTheStepBoundaryWhateverTheirSchedule) {
  StepView v = Running(2, 10, 3);
  v.queued = {Queued(7, 10, kT0, kNever, 25), Queued(8, 10, kT0, kNever, 2)};
  v.active_streams = 100;  // no batch trigger would fire: joining needs none
  const StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  ASSERT_FALSE(d.wait);
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_EQ(d.trigger, Trigger::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0, 1));
}

TEST(StepPolicyTest, AdmitsEarliestDeadlineFirstUpToMaxBatchSize) {
  StepView v = Running(6);
  v.queued = {Queued(1, 10, kT0), Queued(2, 10, kT0, kT0 + milliseconds(50)),
              Queued(3, 10, kT0 - milliseconds(1)), Queued(4, 10, kT0, kT0 + milliseconds(40))};
  StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(3, 1));
  v.running.resize(8, RunningRow{});
  d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kFull);
  EXPECT_THAT(d.admit, IsEmpty());
}

TEST(StepPolicyTest, TokenBudgetBoundsTheRunningSet) {
  BatcherOptions o = Opts();
  o.max_batch_tokens = 40;
  StepView v = Running(3, 10);
  v.queued = {Queued(1, 12), Queued(2, 10)};
  // 4 x 12 = 48 > 40, but 4 x 10 fits: the shorter one joins.
  const StepDecision d = DecideStep(v, kT0, o, Flat());
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(1));
  v.queued = {Queued(1, 12)};
  EXPECT_EQ(DecideStep(v, kT0, o, Flat()).reason, StepReason::kFull);
  // A lone job starts a set even beyond the budget (as a batch of one would).
  StepView empty;
  empty.queued = {Queued(1, 100)};
  empty.draining = true;
  EXPECT_THAT(DecideStep(empty, kT0, o, Flat()).admit, ElementsAre(0));
}

TEST(StepPolicyTest, PaddingDelaysAMuchShorterOrLongerRowUntilMaxWait) {
  StepView v = Running(2, 100);
  v.queued = {Queued(1, 40, kT0)};  // 1 - 240 / 300 = 0.2: fits 0.3
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kJoin);
  v.queued = {Queued(1, 13, kT0)};  // 1 - 213 / 300 = 0.29
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kJoin);
  v.queued = {Queued(1, 9, kT0)};  // 1 - 209 / 300 = 0.303
  StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kPadding);
  EXPECT_THAT(d.admit, IsEmpty());
  v.queued = {Queued(1, 160, kT0)};  // 1 - 360 / 480 = 0.25: longer, fits
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kJoin);
  v.queued = {Queued(1, 200, kT0)};  // 1 - 400 / 600 = 0.33
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kPadding);
  // Delayed, not starved: after max_wait it joins.
  EXPECT_EQ(DecideStep(v, kT0 + milliseconds(10) - kTick, Opts(), Flat()).reason,
            StepReason::kPadding);
  d = DecideStep(v, kT0 + milliseconds(10), Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0));
}

TEST(StepPolicyTest, PaddingMayNotGetWorseThanTheSetAlreadyIs) {
  // A set left wasteful by retired rows: 1 - 110 / 200 = 0.45.
  StepView v = Running(1, 100);
  v.running.push_back(RunningRow{10, 5, kNever});
  v.queued = {Queued(1, 80)};  // 1 - 190 / 300 = 0.37: better than 0.45
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kJoin);
  v.queued = {Queued(1, 10)};  // 1 - 120 / 300 = 0.6: worse
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat()).reason, StepReason::kPadding);
}

TEST(StepPolicyTest, AdmissionWaitsWhenItsEncoderCallWouldMakeARunningRowLate) {
  // 1 ms per stage. A row with 5 steps left finishes in 5 + 1 (HiFT) = 6 ms;
  // an admission adds 1 ms of encoder.
  StepView v = Running(1, 10, 5);
  v.queued = {Queued(1)};
  v.running[0].deadline = kT0 + milliseconds(7);
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat(milliseconds(1))).reason, StepReason::kJoin);
  v.running[0].deadline = kT0 + milliseconds(7) - kTick;
  StepDecision d = DecideStep(v, kT0, Opts(), Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kDeadline);
  EXPECT_THAT(d.admit, IsEmpty());
  // A row that is late either way does not hold admission back.
  v.running[0].deadline = kT0 + milliseconds(6) - kTick;
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat(milliseconds(1))).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, CapComesFromTheLearnedStepCostCurve) {
  const StageCostModel m = Superlinear();
  // Per-row step time 4/R + R/16 ms is least at 8 rows (1 ms) and within 5 %
  // of it up to 10 rows (4/10 + 10/16 = 1.025 ms; 11 rows: 1.051 ms).
  EXPECT_EQ(m.BestRows(100, 32), 10);
  EXPECT_EQ(m.BestRows(100, 6), 6);
  // Longer rows: fewer of them. 200 tokens: 4/R + R/4 is least at 4 rows.
  EXPECT_EQ(m.BestRows(200, 32), 5);

  BatcherOptions o = Opts();
  o.max_batch_size = 32;
  StepView v = Running(9, 100);
  v.queued = {Queued(1, 100), Queued(2, 100)};
  StepDecision d = DecideStep(v, kT0, o, m);
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0));
  EXPECT_EQ(d.cap, 10);
  v.running.push_back(RunningRow{100, 5, kNever});
  d = DecideStep(v, kT0, o, m);
  EXPECT_EQ(d.reason, StepReason::kCap);
  EXPECT_THAT(d.admit, IsEmpty());
  // Where a step does not saturate the device (no quadratic term) the cap is
  // max_batch_size.
  EXPECT_EQ(Flat(milliseconds(1)).BestRows(100, 32), 32);
  EXPECT_EQ(DecideStep(v, kT0, o, Flat(milliseconds(1))).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, AJobThatFitsOnlyAloneWaitsForAnEmptySet) {
  StepView v = Running(1);
  v.queued = {Queued(1), Queued(2)};
  v.queued[0].alone = true;
  StepDecision d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(1));
  v.queued.pop_back();
  d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kAlone);
  v.running.clear();
  v.queued.push_back(Queued(2));
  v.draining = true;
  d = DecideStep(v, kT0, Opts(), Flat());
  EXPECT_EQ(d.reason, StepReason::kStart);
  EXPECT_THAT(d.admit, ElementsAre(0));  // and nothing beside it
}

// Rule 4. Flat(1 ms): a separate join costs the set F = 1 ms of encoder + 1 ms
// of HiFT.
TEST(StepPolicyTest, JoinersGatherUntilTheyHaveWaitedWhatASeparateJoinCosts) {
  EXPECT_EQ(Flat(milliseconds(1)).JoinOverhead(), milliseconds(2));
  StepView v = Running(3);
  v.arrival_rate_hz = 10000;  // busy: more joiners keep coming
  v.queued = {Queued(1, 10, kT0)};
  // 4 rows after the join owe 4 x 2 ms; one job has waited 8 ms at kT0 + 8 ms.
  // (A joiner expected within the last 0.1 ms is not waited for: rule c.)
  StepDecision d =
      DecideStep(v, kT0 + milliseconds(7) + microseconds(800), Cohorts(), Flat(milliseconds(1)));
  EXPECT_FALSE(d.wait);  // the running rows step meanwhile
  EXPECT_EQ(d.reason, StepReason::kGather);
  EXPECT_THAT(d.admit, IsEmpty());
  d = DecideStep(v, kT0 + milliseconds(8), Cohorts(), Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0));
  // Two waiting together: 5 rows owe 10 ms, two jobs wait 5 ms each.
  v.queued.push_back(Queued(2, 10, kT0));
  EXPECT_EQ(
      DecideStep(v, kT0 + milliseconds(4) + microseconds(800), Cohorts(), Flat(milliseconds(1)))
          .reason,
      StepReason::kGather);
  d = DecideStep(v, kT0 + milliseconds(5), Cohorts(), Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0, 1));
  // join_amortization scales what is owed; 0 admits at every boundary.
  BatcherOptions half = Cohorts();
  half.join_amortization = 0.5;
  EXPECT_EQ(DecideStep(v, kT0 + milliseconds(2), half, Flat(milliseconds(1))).reason,
            StepReason::kGather);
  EXPECT_EQ(DecideStep(v, kT0 + milliseconds(3), half, Flat(milliseconds(1))).reason,
            StepReason::kJoin);
  EXPECT_EQ(DecideStep(v, kT0, Opts(), Flat(milliseconds(1))).reason, StepReason::kJoin);
  // A device where calls have no fixed cost gains nothing from gathering.
  EXPECT_EQ(DecideStep(v, kT0, Cohorts(), Flat()).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, WaitsCountFromTheLastJoinSoAFullSetGathersTheSlotsItFrees) {
  BatcherOptions o = Cohorts();
  o.max_batch_size = 4;
  // Queued long before; the set was full until a row retired, and the last
  // join was 1 ms ago: only 1 ms of the wait could have been saved.
  StepView v = Running(3);
  v.arrival_rate_hz = 10000;
  v.queued = {Queued(1, 10, kT0 - milliseconds(100)), Queued(2, 10, kT0 - milliseconds(100))};
  v.last_join = kT0 - milliseconds(1);
  StepDecision d = DecideStep(v, kT0, o, Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kGather);  // 1 ms against 4 rows x 2 ms owed
  EXPECT_THAT(d.admit, IsEmpty());
  d = DecideStep(v, kT0 + milliseconds(7), o, Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0));
  // With no join since it was queued, all of the wait counts.
  v.last_join = TimePoint{};
  EXPECT_EQ(DecideStep(v, kT0, o, Flat(milliseconds(1))).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, AJoinerThatWouldBeLateAfterOneMoreStepJoinsAtOnce) {
  // Its solve: encoder 1 + 10 steps x 1 + HiFT 1 = 12 ms, after one more step
  // of 1 ms: 13 ms.
  StepView v = Running(3);
  v.arrival_rate_hz = 10000;
  v.queued = {Queued(1, 10, kT0, kT0 + milliseconds(13))};
  EXPECT_EQ(DecideStep(v, kT0, Cohorts(), Flat(milliseconds(1))).reason, StepReason::kGather);
  v.queued[0].deadline = kT0 + milliseconds(13) - kTick;
  const StepDecision d = DecideStep(v, kT0, Cohorts(), Flat(milliseconds(1)));
  EXPECT_EQ(d.reason, StepReason::kJoin);
  EXPECT_THAT(d.admit, ElementsAre(0));
}

TEST(StepPolicyTest, JoinersGatherOnlyWhileMoreAreExpected) {
  // 4 rows owe 8 ms; a lone joiner that waited 3 ms has 5 ms left. At 100
  // jobs/s, 0.5 more are expected in that time: not worth waiting for.
  StepView v = Running(3);
  v.queued = {Queued(1, 10, kT0)};
  v.arrival_rate_hz = 100;
  EXPECT_EQ(DecideStep(v, kT0 + milliseconds(3), Cohorts(), Flat(milliseconds(1))).reason,
            StepReason::kJoin);
  v.arrival_rate_hz = 250;  // 1.25 expected: gather
  EXPECT_EQ(DecideStep(v, kT0 + milliseconds(3), Cohorts(), Flat(milliseconds(1))).reason,
            StepReason::kGather);
  v.arrival_rate_hz = 0;  // nothing seen arriving lately
  EXPECT_EQ(DecideStep(v, kT0, Cohorts(), Flat(milliseconds(1))).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, AnEmptySetStartsByItsTriggersNotByRuleFour) {
  StepView v;
  v.queued = {Queued(1)};
  v.draining = true;
  EXPECT_EQ(DecideStep(v, kT0, Cohorts(), Flat(milliseconds(1))).reason, StepReason::kStart);
  v = Running(2);
  v.queued = {Queued(1)};
  v.draining = true;  // shutting down: no reason to hold a job back
  EXPECT_EQ(DecideStep(v, kT0, Cohorts(), Flat(milliseconds(1))).reason, StepReason::kJoin);
}

TEST(StepPolicyTest, ReasonNamesAreDistinct) {
  std::set<std::string> names;
  for (int r = 0; r < kNumStepReasons; ++r) {
    names.insert(StepReasonName(static_cast<StepReason>(r)));
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(kNumStepReasons));
  EXPECT_EQ(names.count("unknown"), 0u);
}

TEST(StageCostModelTest, UsesThePriorUntilMeasured) {
  StageCostModel m(milliseconds(2), microseconds(1));
  EXPECT_EQ(m.Step(4, 100), milliseconds(2) + microseconds(400));
  EXPECT_EQ(m.Encoder(4, 100), milliseconds(2) + microseconds(400));
  EXPECT_EQ(m.Hift(1, 100), milliseconds(2) + microseconds(100));
}

TEST(StageCostModelTest, FitsTheQuadraticStepCurve) {
  const StageCostModel m = Superlinear();
  EXPECT_NEAR(m.step_fit().a(), 4e-3, 1e-6);
  EXPECT_NEAR(m.step_fit().b(), 0, 1e-9);
  EXPECT_NEAR(m.step_fit().c(), 4e-3 / (64.0 * 100 * 100), 1e-12);
}

TEST(StageCostModelTest, LinearStepsKeepNoQuadraticTerm) {
  StageCostModel m(milliseconds(1), Duration::zero());
  for (int r = 1; r <= 16; ++r) {
    m.ObserveStep(
        r, 50,
        std::chrono::duration_cast<Duration>(std::chrono::duration<double>(1e-3 + 2e-6 * r * 50)));
  }
  EXPECT_NEAR(m.step_fit().a(), 1e-3, 1e-6);
  EXPECT_NEAR(m.step_fit().b(), 2e-6, 1e-9);
  EXPECT_LT(m.step_fit().c(), 1e-13);
  EXPECT_EQ(m.BestRows(50, 16), 16);
}

TEST(StageCostModelTest, OneShapeOnlyRefitsTheFixedCost) {
  StageCostModel m(milliseconds(1), microseconds(1));
  for (int i = 0; i < 50; ++i) m.ObserveStep(4, 100, milliseconds(3));
  EXPECT_NEAR(m.step_fit().b(), 1e-6, 1e-12);  // slope unknowable: kept
  EXPECT_NEAR(m.step_fit().a(), 3e-3 - 400e-6, 1e-9);
  EXPECT_EQ(m.step_fit().c(), 0);
}

}  // namespace
}  // namespace vocoder::batcher

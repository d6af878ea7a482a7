// The decayed arrival count the step policy reads (arrival_rate.h).
#include "batcher/arrival_rate.h"

#include <gtest/gtest.h>

#include <cmath>

namespace vocoder::batcher {
namespace {

using std::chrono::milliseconds;
const TimePoint kT0 = TimePoint(std::chrono::seconds(100));

TEST(ArrivalRateTest, SteadyArrivalsGiveTheirRate) {
  ArrivalRate rate;  // tau 1 s
  EXPECT_EQ(rate.PerSecond(kT0), 0.0);
  // 100 per second for 10 s (ten time constants: warmed up).
  for (int i = 0; i < 1000; ++i) rate.Arrive(kT0 + milliseconds(10 * i));
  const TimePoint end = kT0 + milliseconds(9990);
  // Just after an arrival the decayed sum is 1 / (1 - e^-0.01) ~ 100.5.
  EXPECT_NEAR(rate.PerSecond(end), 1.0 / (1.0 - std::exp(-0.01)), 0.01);
  EXPECT_NEAR(rate.PerSecond(end), 100.0, 1.0);
}

TEST(ArrivalRateTest, DecaysWhenArrivalsStop) {
  ArrivalRate rate(milliseconds(500));
  rate.Arrive(kT0);
  rate.Arrive(kT0);
  EXPECT_DOUBLE_EQ(rate.PerSecond(kT0), 4.0);  // 2 / 0.5 s
  EXPECT_NEAR(rate.PerSecond(kT0 + milliseconds(500)), 4.0 * std::exp(-1.0), 1e-12);
  EXPECT_LT(rate.PerSecond(kT0 + std::chrono::seconds(10)), 1e-6);
}

TEST(ArrivalRateTest, ALateArrivalCountsDecayedFromTheLatest) {
  ArrivalRate rate(milliseconds(1000));
  rate.Arrive(kT0 + milliseconds(1000));
  rate.Arrive(kT0);  // enqueued earlier, pulled later
  EXPECT_NEAR(rate.PerSecond(kT0 + milliseconds(1000)), 1.0 + std::exp(-1.0), 1e-12);
}

}  // namespace
}  // namespace vocoder::batcher

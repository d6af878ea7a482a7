// Admission (server/admission.h): the stream cap and the drain under
// concurrent opens, reserve-first; the per-peer share. Runs under TSan.
#include "server/admission.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;

TEST(AdmissionTest, ConcurrentOpensNeverExceedTheCap) {
  ServingState state;
  state.ready.store(true);
  constexpr int kCap = 4;
  Admission admission(state, kCap, 0);
  std::atomic<int> live{0};
  std::atomic<int> peak{0};
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        Refusal why;
        if (!admission.TryAdmit("ipv4:10.0.0.1", &why).ok()) {
          EXPECT_EQ(why, Refusal::kStreamCap);
          continue;
        }
        admitted.fetch_add(1);
        const int now = live.fetch_add(1) + 1;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        live.fetch_sub(1);
        admission.Release("ipv4:10.0.0.1");
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), kCap);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(admission.open(), 0);
}

// Once the drain saw no open call, no call is admitted any more: opens racing
// the drain either land before it (and the drain waits for them) or are
// refused.
TEST(AdmissionTest, NoCallSlipsInAfterTheDrainSawZero) {
  for (int round = 0; round < 20; ++round) {
    ServingState state;
    state.ready.store(true);
    Admission admission(state, 64, 0);
    std::atomic<bool> drained{false};
    std::atomic<int> after_drain{0};
    std::vector<std::thread> openers;
    for (int t = 0; t < 4; ++t) {
      openers.emplace_back([&] {
        // Open and close until 200 attempts were made after the drain ended.
        for (int after = 0; after < 200;) {
          const bool drain_over = drained.load();
          Refusal why;
          if (admission.TryAdmit("p", &why).ok()) {
            if (drained.load()) after_drain.fetch_add(1);
            admission.Release("p");
          } else {
            EXPECT_EQ(why, Refusal::kDraining);
          }
          if (drain_over) ++after;
        }
      });
    }
    ASSERT_TRUE(admission.DrainAndWait(std::chrono::steady_clock::now() + std::chrono::minutes(1)));
    drained.store(true);
    for (auto& t : openers) t.join();
    EXPECT_EQ(after_drain.load(), 0) << "round " << round;
    EXPECT_EQ(admission.open(), 0);
  }
}

TEST(AdmissionTest, PerPeerShareRefusesOnlyThatPeer) {
  ServingState state;
  state.ready.store(true);
  Admission admission(state, 10, 2);
  Refusal why;
  ASSERT_TRUE(admission.TryAdmit("ipv4:10.0.0.1", &why).ok());
  ASSERT_TRUE(admission.TryAdmit("ipv4:10.0.0.1", &why).ok());
  const absl::Status third = admission.TryAdmit("ipv4:10.0.0.1", &why);
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.message()), HasSubstr("--max-streams-per-peer"));
  EXPECT_EQ(why, Refusal::kPeerCap);
  EXPECT_EQ(admission.open(), 2) << "the refused reservation was not rolled back";
  EXPECT_TRUE(admission.TryAdmit("ipv4:10.0.0.2", &why).ok());
  admission.Release("ipv4:10.0.0.1");
  EXPECT_TRUE(admission.TryAdmit("ipv4:10.0.0.1", &why).ok());
}

TEST(AdmissionTest, InterruptEndsTheDrainWait) {
  ServingState state;
  state.ready.store(true);
  Admission admission(state, 10, 0);
  Refusal why;
  ASSERT_TRUE(admission.TryAdmit("p", &why).ok());
  std::thread second_signal([&] { admission.Interrupt(); });
  EXPECT_FALSE(admission.DrainAndWait(std::chrono::steady_clock::now() + std::chrono::hours(1)));
  second_signal.join();
  admission.Release("p");
}

TEST(PeerHostTest, DropsThePort) {
  EXPECT_EQ(PeerHost("ipv4:10.0.0.1:5555"), "ipv4:10.0.0.1");
  EXPECT_EQ(PeerHost("ipv6:[::1]:80"), "ipv6:[::1]");
  EXPECT_EQ(PeerHost("unix:/tmp/s"), "unix:/tmp/s");
}

}  // namespace
}  // namespace vocoder::server

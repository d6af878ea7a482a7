// batcher/mutex.h: the annotated std::mutex wrapper. Its locking is
// std::mutex's; what is tested here is the waiting, which the wrapper
// implements itself (adopting and releasing the held lock around the wait).
#include "batcher/mutex.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <thread>

namespace vocoder::batcher {
namespace {

TEST(MutexTest, WaitReturnsHoldingTheLockAfterANotify) {
  Mutex mu;
  std::condition_variable cv;
  bool ready = false;  // guarded by mu
  std::thread setter([&] {
    MutexLock lock(mu);
    ready = true;
    cv.notify_all();
  });
  {
    MutexLock lock(mu);
    while (!ready) mu.Wait(cv);
    EXPECT_TRUE(ready);
  }
  setter.join();
  // The scope above released the lock exactly once: it can be taken again.
  MutexLock again(mu);
}

TEST(MutexTest, WaitUntilReportsAPassedDeadline) {
  Mutex mu;
  std::condition_variable cv;
  MutexLock lock(mu);
  // A deadline already in the past: no wake-up can come, the wait times out.
  EXPECT_FALSE(mu.WaitUntil(cv, std::chrono::steady_clock::now() - std::chrono::seconds(1)));
}

TEST(MutexTest, WaitUntilWakesOnNotifyBeforeTheDeadline) {
  Mutex mu;
  std::condition_variable cv;
  bool ready = false;
  std::thread setter([&] {
    MutexLock lock(mu);
    ready = true;
    cv.notify_all();
  });
  bool woken = false;
  {
    MutexLock lock(mu);
    // A minute is only reached by a lost wake-up.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (!ready && mu.WaitUntil(cv, give_up)) {
    }
    woken = ready;
  }
  setter.join();
  EXPECT_TRUE(woken);
}

}  // namespace
}  // namespace vocoder::batcher

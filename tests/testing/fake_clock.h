// A manual clock for deterministic batcher tests: time moves only by
// Advance(), which wakes a sleeper whose deadline has come. Tests synchronize
// with the batcher's thread through WaitForSleeper(), never through sleeps.
// (std::mutex, not absl::Mutex: TSan sees only the former; see batcher.h.)
#ifndef VOCODER_TESTS_TESTING_FAKE_CLOCK_H_
#define VOCODER_TESTS_TESTING_FAKE_CLOCK_H_

#include <condition_variable>
#include <map>
#include <mutex>

#include "batcher/clock.h"

namespace vocoder::testing {

class FakeClock final : public batcher::Clock {
 public:
  // Starts at an arbitrary, fixed point so tests never depend on real time.
  FakeClock() : now_(batcher::TimePoint(std::chrono::seconds(1000))) {}

  batcher::TimePoint Now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }

  void SleepUntil(batcher::TimePoint deadline, batcher::Wakeup& wakeup,
                  batcher::Wakeup::Token token) override {
    {
      std::lock_guard lock(mu_);
      if (now_ >= deadline) return;
      sleepers_[&wakeup] = deadline;
      ++sleeps_;
    }
    changed_.notify_all();
    wakeup.Wait(token, batcher::kNever);
    std::lock_guard lock(mu_);
    sleepers_.erase(&wakeup);
  }

  void Advance(batcher::Duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
    for (auto& [wakeup, deadline] : sleepers_) {
      if (deadline <= now_) wakeup->Wake();
    }
  }

  // Blocks until a thread sleeps in SleepUntil with a finite deadline, having
  // started more than `after` sleeps in total; returns that deadline.
  batcher::TimePoint WaitForSleeper(int64_t after = 0) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] {
      return !sleepers_.empty() && sleeps_ > after && sleepers_.begin()->second != batcher::kNever;
    });
    return sleepers_.begin()->second;
  }

  int64_t sleeps() const {
    std::lock_guard lock(mu_);
    return sleeps_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable changed_;
  batcher::TimePoint now_;
  std::map<batcher::Wakeup*, batcher::TimePoint> sleepers_;
  int64_t sleeps_ = 0;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_CLOCK_H_

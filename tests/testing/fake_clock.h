// A manual clock for deterministic batcher tests: time moves only by
// Advance(), which wakes a sleeper whose deadline has come. Tests synchronize
// with the batcher's thread through WaitForSleeper(), never through sleeps.
#ifndef VOCODER_TESTS_TESTING_FAKE_CLOCK_H_
#define VOCODER_TESTS_TESTING_FAKE_CLOCK_H_

#include <map>

#include "absl/synchronization/mutex.h"
#include "batcher/clock.h"

namespace vocoder::testing {

class FakeClock final : public batcher::Clock {
 public:
  // Starts at an arbitrary, fixed point so tests never depend on real time.
  FakeClock() : now_(batcher::TimePoint(std::chrono::seconds(1000))) {}

  batcher::TimePoint Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }

  void SleepUntil(batcher::TimePoint deadline, batcher::Wakeup& wakeup,
                  batcher::Wakeup::Token token) override {
    {
      absl::MutexLock lock(&mu_);
      if (now_ >= deadline) return;
      sleepers_[&wakeup] = deadline;
      ++sleeps_;
    }
    wakeup.Wait(token, batcher::kNever);
    absl::MutexLock lock(&mu_);
    sleepers_.erase(&wakeup);
  }

  void Advance(batcher::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
    for (auto& [wakeup, deadline] : sleepers_) {
      if (deadline <= now_) wakeup->Wake();
    }
  }

  // Blocks until a thread sleeps in SleepUntil with a finite deadline, having
  // started more than `after` sleeps in total; returns that deadline.
  batcher::TimePoint WaitForSleeper(int64_t after = 0) {
    struct Args {
      FakeClock* clock;
      int64_t after;
    } args{this, after};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Args* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return !a->clock->sleepers_.empty() && a->clock->sleeps_ > a->after &&
                 a->clock->sleepers_.begin()->second != batcher::kNever;
        },
        &args));
    return sleepers_.begin()->second;
  }

  int64_t sleeps() const {
    absl::MutexLock lock(&mu_);
    return sleeps_;
  }

 private:
  mutable absl::Mutex mu_;
  batcher::TimePoint now_ ABSL_GUARDED_BY(mu_);
  std::map<batcher::Wakeup*, batcher::TimePoint> sleepers_ ABSL_GUARDED_BY(mu_);
  int64_t sleeps_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_CLOCK_H_

// Time and sleeping for the batcher, injectable so batching is tested with a
// fake clock and no real sleeps.
//
// Wakeup is the GPU thread's doorbell: producers ring it with Notify() (lock-
// free: two atomics and, only when the consumer sleeps, one futex wake); the
// single consumer sleeps on it through Clock::SleepUntil(). The protocol is an
// eventcount, so no wake-up is lost:
//   consumer: t = PrepareWait(); if (work visible) CancelWait(); else SleepUntil(deadline, t)
//   producer: publish work (seq_cst); Notify()
// Either the consumer's re-check sees the work, or the producer sees the
// consumer's sleeping flag and bumps the epoch the consumer sleeps on.
//
// Linux only (futex).
#ifndef VOCODER_BATCHER_CLOCK_H_
#define VOCODER_BATCHER_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace vocoder::batcher {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Duration = SteadyClock::duration;

// "No deadline".
inline constexpr TimePoint kNever = TimePoint::max();

class Wakeup {
 public:
  using Token = uint32_t;

  // Thread-safe, lock-free. Wakes the consumer if it sleeps (or is about to).
  void Notify();
  // Thread-safe. Wakes the consumer unconditionally (shutdown, fake clocks).
  void Wake();

  // Consumer only. Announces the intent to sleep; re-check for work after it.
  Token PrepareWait();
  // Consumer only. Withdraws the intent (work was found).
  void CancelWait();
  // Consumer only. Sleeps until the epoch moves past `token` or the steady
  // clock reaches `deadline` (kNever: no timeout). May wake spuriously.
  void Wait(Token token, TimePoint deadline);

 private:
  alignas(64) std::atomic<uint32_t> epoch_{0};
  alignas(64) std::atomic<bool> sleeping_{false};
};

// Thread-safety: implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  // Blocks until Now() >= deadline or `wakeup` is notified after `token` was
  // taken; may return early (spuriously). Called by one consumer thread.
  virtual void SleepUntil(TimePoint deadline, Wakeup& wakeup, Wakeup::Token token) = 0;
};

// The real steady clock.
class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return SteadyClock::now(); }
  void SleepUntil(TimePoint deadline, Wakeup& wakeup, Wakeup::Token token) override {
    wakeup.Wait(token, deadline);
  }
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_CLOCK_H_

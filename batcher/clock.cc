#include "batcher/clock.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>

namespace vocoder::batcher {
namespace {

// std::atomic::wait has no timeout; the futex does. steady_clock is
// CLOCK_MONOTONIC on Linux, which FUTEX_WAIT_BITSET uses for absolute waits.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, TimePoint deadline) {
  timespec ts{};
  timespec* timeout = nullptr;
  if (deadline != kNever) {
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns <= 0) return;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    timeout = &ts;
  }
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_BITSET_PRIVATE, expected,
          timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

}  // namespace

void Wakeup::Notify() {
  if (sleeping_.load(std::memory_order_seq_cst)) Wake();
}

void Wakeup::Wake() {
  sleeping_.store(false, std::memory_order_seq_cst);
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  FutexWakeAll(&epoch_);
}

Wakeup::Token Wakeup::PrepareWait() {
  const Token token = epoch_.load(std::memory_order_seq_cst);
  sleeping_.store(true, std::memory_order_seq_cst);
  return token;
}

void Wakeup::CancelWait() { sleeping_.store(false, std::memory_order_seq_cst); }

void Wakeup::Wait(Token token, TimePoint deadline) {
  while (epoch_.load(std::memory_order_seq_cst) == token) {
    if (deadline != kNever && SteadyClock::now() >= deadline) break;
    FutexWait(&epoch_, token, deadline);
  }
  sleeping_.store(false, std::memory_order_seq_cst);
}

}  // namespace vocoder::batcher

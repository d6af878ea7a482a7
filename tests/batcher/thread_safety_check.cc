// Compiled by CTest with clang -fsyntax-only -Wthread-safety -Werror
// (tests/CMakeLists.txt), not built into any target: with
// VOCODER_TSA_VIOLATION a guarded member is read without its lock and the
// analysis must reject it; without, the same code holding the lock through
// MutexLock must compile. Proves that batcher/mutex.h's annotations work and
// that the flag is live.
#include <condition_variable>

#include "batcher/mutex.h"

namespace {

class Counter {
 public:
  void Add() {
    vocoder::batcher::MutexLock lock(mu_);
    ++value_;
    cv_.notify_all();
  }
  int WaitForOne() {
    vocoder::batcher::MutexLock lock(mu_);
    while (value_ == 0) mu_.Wait(cv_);
    return value_;
  }
#ifdef VOCODER_TSA_VIOLATION
  int Peek() const { return value_; }  // no lock: -Wthread-safety must fail this
#else
  int Peek() const {
    vocoder::batcher::MutexLock lock(mu_);
    return value_;
  }
#endif

 private:
  mutable vocoder::batcher::Mutex mu_;
  std::condition_variable cv_;
  int value_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

int main() {
  Counter c;
  c.Add();
  return c.WaitForOne() + c.Peek() == 2 ? 0 : 1;
}

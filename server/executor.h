// A small thread pool for completion work: the batcher's GPU thread hands each
// finished job here and returns at once; encoding audio and starting gRPC
// writes happen on these threads, never on the GPU thread.
//
// Thread-safe. The destructor runs what is queued, then joins.
#ifndef VOCODER_SERVER_EXECUTOR_H_
#define VOCODER_SERVER_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "server/sync.h"

namespace vocoder::server {

class Executor {
 public:
  explicit Executor(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~Executor() {
    {
      MutexLock lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Never blocks beyond a short critical section.
  void Post(std::function<void()> fn) {
    {
      MutexLock lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        MutexLock lock(mu_);
        while (!stop_ && queue_.empty()) mu_.Wait(cv_);
        if (queue_.empty()) return;  // stopping and drained
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_EXECUTOR_H_

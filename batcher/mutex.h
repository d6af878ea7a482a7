// An annotated mutex for vocoderd's own code: a std::mutex with Clang's
// thread-safety capabilities, so that ABSL_GUARDED_BY members and
// ABSL_EXCLUSIVE_LOCKS_REQUIRED methods are checked under -Wthread-safety
// (on for clang builds: cmake/Warnings.cmake).
//
// Why not absl::Mutex: Debian's Abseil is not built with ThreadSanitizer
// annotations, so TSan could not see absl::Mutex's synchronization and would
// report races on everything it guards. std::mutex underneath keeps TSan
// (and std::condition_variable) working; this class only adds the
// annotations. It lives in batcher/ because every folder that has guarded
// state may depend on batcher (server -> batcher), and the batcher on nothing.
//
// Thread-safety: as std::mutex. Not recursive.
#ifndef VOCODER_BATCHER_MUTEX_H_
#define VOCODER_BATCHER_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace vocoder::batcher {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // BasicLockable, so std::lock_guard and std::scoped_lock compile; prefer
  // MutexLock: the analysis does not see through libstdc++'s guards, so a
  // guarded member read under std::lock_guard is an error under clang.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

  // Waits on `cv` (releasing the lock meanwhile, holding it again on
  // return). Spurious wake-ups happen: call it in a loop over the condition,
  //   while (!done_) mu_.Wait(cv_);
  // which the analysis checks like any code that holds the lock.
  void Wait(std::condition_variable& cv) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    cv.wait(lock);
    lock.release();  // still held: the caller's scope unlocks it
  }
  // As Wait, until `deadline` at the latest; false when it passed.
  template <typename Clock, typename Duration>
  bool WaitUntil(std::condition_variable& cv,
                 const std::chrono::time_point<Clock, Duration>& deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    const bool woken = cv.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return woken;
  }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope (std::lock_guard, annotated).
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_MUTEX_H_

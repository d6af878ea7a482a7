// Test doubles for the batcher: a job that logs its completion and a runner
// that records batches, can fail on chosen jobs, throw, or block until
// released. (std::mutex, not absl::Mutex: TSan sees only the former.)
#ifndef VOCODER_TESTS_TESTING_FAKE_RUNNER_H_
#define VOCODER_TESTS_TESTING_FAKE_RUNNER_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <vector>

#include "absl/status/status.h"
#include "batcher/batcher.h"

namespace vocoder::testing {

// Every completion, by job id. Thread-safe.
class CompletionLog {
 public:
  struct Entry {
    absl::Status status;
    batcher::BatchInfo info;
  };
  void Record(int id, absl::Status status, const batcher::BatchInfo& info) {
    {
      std::lock_guard lock(mu_);
      entries_[id].push_back({std::move(status), info});
      order_.push_back(id);
    }
    changed_.notify_all();
  }
  void WaitForCompletions(size_t n) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return order_.size() >= n; });
  }
  std::map<int, std::vector<Entry>> entries() const {
    std::lock_guard lock(mu_);
    return entries_;
  }
  std::vector<int> order() const {
    std::lock_guard lock(mu_);
    return order_;
  }
  absl::Status status(int id) const {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    return it == entries_.end() ? absl::UnknownError("not completed") : it->second.back().status;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<int, std::vector<Entry>> entries_;
  std::vector<int> order_;
};

class TestJob final : public batcher::Job {
 public:
  TestJob(int id, uint64_t stream, batcher::BatchKey key, int64_t cost, CompletionLog* log,
          batcher::TimePoint deadline = batcher::kNever,
          std::shared_ptr<const batcher::Cancellation> cancel = nullptr)
      : Job(key, stream, cost, deadline, std::move(cancel)), id_(id), log_(log) {}
  void Complete(absl::Status status, const batcher::BatchInfo& info) override {
    log_->Record(id_, std::move(status), info);
  }
  int id() const { return id_; }

 private:
  int id_;
  CompletionLog* log_;
};

class FakeRunner final : public batcher::BatchRunner {
 public:
  absl::Status Run(absl::Span<batcher::Job* const> jobs) override {
    std::vector<int> ids;
    for (auto* j : jobs) ids.push_back(static_cast<TestJob*>(j)->id());
    std::unique_lock lock(mu_);
    batches_.push_back(ids);
    keys_.push_back(jobs.front()->key());
    changed_.notify_all();
    changed_.wait(lock, [&] { return !blocked_; });
    if (throw_) throw std::runtime_error("boom");
    int64_t longest = 0;
    for (auto* j : jobs) longest = std::max(longest, j->cost());
    if (memory_tokens_ > 0 && longest * static_cast<int64_t>(jobs.size()) > memory_tokens_) {
      return absl::ResourceExhaustedError("CUDA out of memory (fake device)");
    }
    for (int id : ids) {
      if (poison_.count(id) > 0) return absl::InternalError("poison job in batch");
    }
    return absl::OkStatus();
  }

  void Block() {
    Set([&] { blocked_ = true; });
  }
  void Release() {
    Set([&] { blocked_ = false; });
  }
  void Poison(int id) {
    Set([&] { poison_.insert(id); });
  }
  void Throw() {
    Set([&] { throw_ = true; });
  }
  // A device with room for this many padded tokens (rows x longest cost):
  // larger batches fail with ResourceExhausted, as the model runner does on
  // CUDA out of memory. 0 = unlimited.
  void OutOfMemoryAbove(int64_t padded_tokens) {
    Set([&] { memory_tokens_ = padded_tokens; });
  }

  // Blocks until at least n batches have started.
  void WaitForBatches(size_t n) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return batches_.size() >= n; });
  }
  std::vector<std::vector<int>> batches() const {
    std::lock_guard lock(mu_);
    return batches_;
  }
  std::vector<batcher::BatchKey> keys() const {
    std::lock_guard lock(mu_);
    return keys_;
  }

 private:
  template <typename F>
  void Set(F f) {
    {
      std::lock_guard lock(mu_);
      f();
    }
    changed_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::vector<int>> batches_;
  std::vector<batcher::BatchKey> keys_;
  std::set<int> poison_;
  bool blocked_ = false;
  bool throw_ = false;
  int64_t memory_tokens_ = 0;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_RUNNER_H_

// Test doubles for the batcher: a job that logs its completion and a runner
// that records batches, can fail on chosen jobs, throw, or block until
// released.
#ifndef VOCODER_TESTS_TESTING_FAKE_RUNNER_H_
#define VOCODER_TESTS_TESTING_FAKE_RUNNER_H_

#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
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
    absl::MutexLock lock(&mu_);
    entries_[id].push_back({std::move(status), info});
    order_.push_back(id);
  }
  void WaitForCompletions(size_t n) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::pair<CompletionLog*, size_t>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return a->first->order_.size() >= a->second;
        },
        new_arg(n)));
  }
  std::map<int, std::vector<Entry>> entries() const {
    absl::MutexLock lock(&mu_);
    return entries_;
  }
  std::vector<int> order() const {
    absl::MutexLock lock(&mu_);
    return order_;
  }
  absl::Status status(int id) const {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    return it == entries_.end() ? absl::UnknownError("not completed") : it->second.back().status;
  }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return order_.size();
  }

 private:
  std::pair<CompletionLog*, size_t>* new_arg(size_t n) {
    arg_ = {this, n};
    return &arg_;
  }
  mutable absl::Mutex mu_;
  std::map<int, std::vector<Entry>> entries_;
  std::vector<int> order_;
  std::pair<CompletionLog*, size_t> arg_;
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
    absl::MutexLock lock(&mu_);
    batches_.push_back(ids);
    keys_.push_back(jobs.front()->key());
    mu_.Await(absl::Condition(+[](bool* b) { return !*b; }, &blocked_));
    if (throw_) throw std::runtime_error("boom");
    for (int id : ids) {
      if (poison_.count(id) > 0) return absl::InternalError("poison job in batch");
    }
    return absl::OkStatus();
  }

  void Block() {
    absl::MutexLock lock(&mu_);
    blocked_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    blocked_ = false;
  }
  void Poison(int id) {
    absl::MutexLock lock(&mu_);
    poison_.insert(id);
  }
  void Throw() {
    absl::MutexLock lock(&mu_);
    throw_ = true;
  }
  // Blocks until at least n batches have started.
  void WaitForBatches(size_t n) {
    absl::MutexLock lock(&mu_);
    arg_ = {this, n};
    mu_.Await(absl::Condition(
        +[](std::pair<FakeRunner*, size_t>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return a->first->batches_.size() >= a->second;
        },
        &arg_));
  }
  std::vector<std::vector<int>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  std::vector<batcher::BatchKey> keys() const {
    absl::MutexLock lock(&mu_);
    return keys_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<int>> batches_;
  std::vector<batcher::BatchKey> keys_;
  std::set<int> poison_;
  bool blocked_ = false;
  bool throw_ = false;
  std::pair<FakeRunner*, size_t> arg_;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_RUNNER_H_

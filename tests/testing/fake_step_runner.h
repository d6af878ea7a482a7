// A fake StepRunner for the batcher's step scheduling: keeps a running set of
// TestJobs (tests/testing/fake_runner.h) with each row's own schedule, checks
// the StepRunner contract on every call (violations are recorded, not
// thrown), and can fail chosen jobs or steps, run out of "device memory"
// above a row count, block in Step until released, or call a hook at the
// start of every call (on the GPU thread) to act between steps.
// (std::mutex, not absl::Mutex: TSan sees only the former.)
#ifndef VOCODER_TESTS_TESTING_FAKE_STEP_RUNNER_H_
#define VOCODER_TESTS_TESTING_FAKE_STEP_RUNNER_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "batcher/step_runner.h"
#include "tests/testing/fake_runner.h"

namespace vocoder::testing {

class FakeStepRunner final : public batcher::StepRunner {
 public:
  enum class Call { kAdmit, kStep, kRetire, kDrop };
  struct Row {
    int id = 0;
    uint64_t stream = 0;
    int steps = 0;
    int n = 0;
  };
  // Runs first in every call, on the GPU thread, without the fake's lock; a
  // non-OK status fails the call (Drop ignores it).
  using Hook = std::function<absl::Status(Call)>;

  absl::Status Admit(absl::Span<batcher::Job* const> jobs) override {
    if (auto s = RunHook(Call::kAdmit); !s.ok()) return s;
    std::unique_lock lock(mu_);
    std::vector<int> ids;
    for (auto* j : jobs) ids.push_back(Id(j));
    admits_.push_back(ids);
    if (jobs.empty()) violations_.push_back("Admit with no jobs");
    for (auto* j : jobs) {
      if (Find(Id(j)) != rows_.end())
        violations_.push_back(absl::StrCat("job ", Id(j), " admitted twice"));
      for (const Row& r : rows_) {
        if (r.stream == j->stream_id()) {
          violations_.push_back(
              absl::StrCat("job ", Id(j), " admitted beside its stream's job ", r.id));
        }
      }
    }
    for (int id : ids) {
      if (poison_.count(id) > 0) return absl::InvalidArgumentError(absl::StrCat("poison job ", id));
    }
    if (memory_rows_ != 0 &&
        rows_.size() + jobs.size() > static_cast<size_t>(std::max(memory_rows_, 0))) {
      return absl::ResourceExhaustedError("CUDA out of memory (fake device)");
    }
    for (auto* j : jobs) rows_.push_back(Row{Id(j), j->stream_id(), 0, int(j->key().compat)});
    max_rows_ = std::max(max_rows_, static_cast<int>(rows_.size()));
    changed_.notify_all();
    return absl::OkStatus();
  }

  absl::Status Step() override {
    absl::Status hook = RunHook(Call::kStep);
    std::unique_lock lock(mu_);
    ++steps_;
    step_rows_.push_back(static_cast<int>(rows_.size()));
    changed_.notify_all();
    changed_.wait(lock, [&] { return !blocked_; });
    if (rows_.empty()) violations_.push_back("Step with no running rows");
    if (!hook.ok() || fail_steps_.count(steps_) > 0) {
      rows_.clear();  // the contract: a failed step empties the set
      return hook.ok() ? absl::InternalError(absl::StrCat("step ", steps_, " failed")) : hook;
    }
    for (Row& r : rows_) {
      if (r.steps < r.n) ++r.steps;
    }
    return absl::OkStatus();
  }

  absl::Status Retire(absl::Span<batcher::Job* const> jobs) override {
    absl::Status hook = RunHook(Call::kRetire);
    std::lock_guard lock(mu_);
    bool poisoned = false;
    for (auto* j : jobs) {
      auto it = Find(Id(j));
      if (it == rows_.end()) {
        violations_.push_back(absl::StrCat("Retire of job ", Id(j), ", which is not running"));
        continue;
      }
      if (it->steps != it->n) {
        violations_.push_back(
            absl::StrCat("Retire of job ", Id(j), " after ", it->steps, " of ", it->n, " steps"));
      }
      rows_.erase(it);
      retired_.push_back(Id(j));
      poisoned = poisoned || poison_retire_.count(Id(j)) > 0;
    }
    if (!hook.ok()) return hook;
    return poisoned ? absl::InternalError("HiFT failed") : absl::OkStatus();
  }

  void Drop(absl::Span<batcher::Job* const> jobs) override {
    (void)RunHook(Call::kDrop);
    std::lock_guard lock(mu_);
    for (auto* j : jobs) {
      auto it = Find(Id(j));
      if (it == rows_.end()) {
        violations_.push_back(absl::StrCat("Drop of job ", Id(j), ", which is not running"));
        continue;
      }
      rows_.erase(it);
      dropped_.push_back(Id(j));
    }
  }

  void SetHook(Hook hook) { hook_ = std::move(hook); }  // before the batcher starts
  void Poison(int id) {
    Set([&] { poison_.insert(id); });
  }
  void PoisonRetire(int id) {
    Set([&] { poison_retire_.insert(id); });
  }
  void FailStep(int n) {
    Set([&] { fail_steps_.insert(n); });
  }  // the n-th Step (1-based)
  // Admit fails with ResourceExhausted beyond `rows` running rows; 0 = no
  // limit, negative = nothing fits.
  void OutOfMemoryAbove(int rows) {
    Set([&] { memory_rows_ = rows; });
  }
  void Block() {
    Set([&] { blocked_ = true; });
  }
  void Release() {
    Set([&] { blocked_ = false; });
  }
  // Blocks until at least n Steps have started.
  void WaitForSteps(int n) {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return steps_ >= n; });
  }

  std::vector<std::string> violations() const { return Get(violations_); }
  std::vector<std::vector<int>> admits() const { return Get(admits_); }
  std::vector<int> step_rows() const { return Get(step_rows_); }
  std::vector<int> retired() const { return Get(retired_); }
  std::vector<int> dropped() const { return Get(dropped_); }
  std::vector<Row> rows() const { return Get(rows_); }
  int max_rows() const { return Get(max_rows_); }

 private:
  static int Id(batcher::Job* j) { return static_cast<TestJob*>(j)->id(); }
  std::vector<Row>::iterator Find(int id) {
    return std::find_if(rows_.begin(), rows_.end(), [&](const Row& r) { return r.id == id; });
  }
  absl::Status RunHook(Call call) { return hook_ ? hook_(call) : absl::OkStatus(); }
  template <typename F>
  void Set(F f) {
    {
      std::lock_guard lock(mu_);
      f();
    }
    changed_.notify_all();
  }
  template <typename T>
  T Get(const T& v) const {
    std::lock_guard lock(mu_);
    return v;
  }

  Hook hook_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Row> rows_;
  std::vector<std::vector<int>> admits_;
  std::vector<int> step_rows_;
  std::vector<int> retired_;
  std::vector<int> dropped_;
  std::vector<std::string> violations_;
  std::set<int> poison_;
  std::set<int> poison_retire_;
  std::set<int> fail_steps_;
  int memory_rows_ = 0;
  int steps_ = 0;
  int max_rows_ = 0;
  bool blocked_ = false;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_STEP_RUNNER_H_

// Batcher's GPU-thread loop for step scheduling (Scheduling::kStep): the rules
// are in batcher.h ("STEP SCHEDULING") and step_policy.h.
#include <algorithm>
#include <exception>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batcher/batcher.h"

namespace vocoder::batcher {
namespace {

// Runs a runner call, turning exceptions into Internal.
template <typename F>
absl::Status Guarded(F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model runner threw: ", e.what()));
  } catch (...) {
    return absl::InternalError("model runner threw a non-standard exception");
  }
}

int64_t Longest(absl::Span<Job* const> jobs) {
  int64_t longest = 0;
  for (const Job* j : jobs) longest = std::max(longest, j->cost());
  return longest;
}

}  // namespace

StepView Batcher::BuildStepView(std::vector<Job*>& candidates, bool draining, TimePoint now) const {
  StepView view;
  view.active_streams = active_streams_.load(std::memory_order_relaxed);
  view.last_arrival = last_arrival_;
  view.last_join = last_join_;
  view.arrival_rate_hz = arrivals_.PerSecond(now);
  view.draining = draining;
  std::set<uint64_t> seen_streams;
  for (const Row& r : running_) {
    seen_streams.insert(r.job->stream_id());
    view.running.push_back(RunningRow{r.job->cost(), r.steps_left, r.job->deadline()});
  }
  for (Job* j : pending_) {
    // Only a stream's head job, and only when no row of the stream runs.
    if (!seen_streams.insert(j->stream_id()).second) continue;
    candidates.push_back(j);
    view.queued.push_back(StepCandidate{j->stream_id(), j->enqueued(), j->deadline(), j->cost(),
                                        static_cast<int>(j->key().compat), j->step_alone_});
  }
  return view;
}

void Batcher::SettleRow(const Row& row, const absl::Status& status, TimePoint end,
                        JobOutcome outcome) {
  BatchInfo info{row.admitted - row.job->enqueued(), end - row.admitted, row.batch_size,
                 row.trigger};
  Settle(row.job, status, info, outcome);
}

void Batcher::SweepRunning(TimePoint now) {
  std::vector<Row> dead;
  std::erase_if(running_, [&](const Row& r) {
    if (!r.job->cancelled() && r.job->deadline() > now) return false;
    dead.push_back(r);
    return true;
  });
  if (dead.empty()) return;
  std::vector<Job*> jobs;
  for (const Row& r : dead) jobs.push_back(r.job);
  (void)Guarded([&] {
    step_runner_->Drop(absl::MakeConstSpan(jobs));
    return absl::OkStatus();
  });
  for (const Row& r : dead) {
    if (r.job->cancelled()) {
      SettleRow(r, absl::CancelledError("stream cancelled while its chunk was being vocoded"), now,
                JobOutcome::kCancelled);
    } else {
      SettleRow(r, absl::DeadlineExceededError("deadline passed while the chunk was being vocoded"),
                now, JobOutcome::kExpired);
    }
  }
}

void Batcher::ShutdownRunning(TimePoint now) {
  if (running_.empty()) return;
  std::vector<Row> rows;
  rows.swap(running_);
  std::vector<Job*> jobs;
  for (const Row& r : rows) jobs.push_back(r.job);
  (void)Guarded([&] {
    step_runner_->Drop(absl::MakeConstSpan(jobs));
    return absl::OkStatus();
  });
  for (const Row& r : rows) {
    SettleRow(r, absl::UnavailableError("vocoder shut down before this chunk finished"), now,
              JobOutcome::kShutdown);
  }
}

void Batcher::AdmitJobs(std::vector<Job*> jobs, Trigger trigger, bool allow_bisect,
                        std::vector<Job*>& deferred) {
  const TimePoint start = clock_.Now();
  absl::Status status = Guarded([&] { return step_runner_->Admit(absl::MakeConstSpan(jobs)); });
  const TimePoint end = clock_.Now();
  const auto size = static_cast<int>(jobs.size());
  {
    MutexLock lock(stats_mu_);
    ++stats_.admissions;
  }
  if (observer_ != nullptr) observer_->OnBusy(end - start);
  if (status.ok()) {
    stage_cost_.ObserveEncoder(size, Longest(jobs), end - start);
    const int batch_size = static_cast<int>(running_.size()) + size;
    for (Job* j : jobs) {
      running_.push_back(Row{j, static_cast<int>(j->key().compat), start, batch_size, trigger});
    }
    return;
  }
  const auto mid = jobs.begin() + static_cast<std::ptrdiff_t>(jobs.size() / 2);
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    if (size > 1) {
      NoteOomSplit(size);
      AdmitJobs(std::vector<Job*>(jobs.begin(), mid), trigger, allow_bisect, deferred);
      AdmitJobs(std::vector<Job*>(mid, jobs.end()), trigger, allow_bisect, deferred);
      return;
    }
    if (!running_.empty()) {
      // It may fit once the running rows are gone: back to the queue.
      jobs[0]->step_alone_ = true;
      deferred.push_back(jobs[0]);
      return;
    }
    status = TooBigAlone(*jobs[0], status);
  }
  if (!status.ok() && allow_bisect && size > 1) {
    AdmitJobs(std::vector<Job*>(jobs.begin(), mid), trigger, false, deferred);
    AdmitJobs(std::vector<Job*>(mid, jobs.end()), trigger, false, deferred);
    return;
  }
  for (Job* j : jobs) {
    BatchInfo info{start - j->enqueued(), end - start, size, trigger};
    Settle(j, status, info, JobOutcome::kError);
  }
}

void Batcher::StepRunning() {
  std::vector<Job*> jobs;
  int64_t real = 0;
  for (const Row& r : running_) {
    jobs.push_back(r.job);
    real += r.job->cost();
  }
  const auto rows = static_cast<int>(jobs.size());
  const int64_t longest = Longest(jobs);
  const TimePoint start = clock_.Now();
  const absl::Status status = Guarded([&] { return step_runner_->Step(); });
  const TimePoint end = clock_.Now();
  if (status.ok()) stage_cost_.ObserveStep(rows, longest, end - start);
  const StepRecord record{rows, longest * rows, real, CountVoices(jobs), end - start, status.ok()};
  {
    MutexLock lock(stats_mu_);
    ++stats_.steps;
    stats_.step_rows += rows;
    ++stats_.running_rows[rows];
    stats_.padded_tokens += record.padded_tokens;
    stats_.real_tokens += real;
    stats_.compute_total += end - start;
  }
  if (observer_ != nullptr) {
    observer_->OnStep(record);
    observer_->OnBusy(end - start);
  }
  if (!status.ok()) {
    // Every row's ODE state is gone; the runner emptied its set.
    std::vector<Row> lost;
    lost.swap(running_);
    for (const Row& r : lost) SettleRow(r, status, end, JobOutcome::kError);
    return;
  }
  for (Row& r : running_) --r.steps_left;
}

void Batcher::RetireDone() {
  std::vector<Row> done;
  std::erase_if(running_, [&](const Row& r) {
    if (r.steps_left > 0) return false;
    done.push_back(r);
    return true;
  });
  if (done.empty()) return;
  std::vector<Job*> jobs;
  for (const Row& r : done) jobs.push_back(r.job);
  const TimePoint start = clock_.Now();
  const absl::Status status =
      Guarded([&] { return step_runner_->Retire(absl::MakeConstSpan(jobs)); });
  const TimePoint end = clock_.Now();
  if (status.ok()) {
    stage_cost_.ObserveHift(static_cast<int>(jobs.size()), Longest(jobs), end - start);
  }
  {
    MutexLock lock(stats_mu_);
    ++stats_.retirements;
  }
  if (observer_ != nullptr) observer_->OnBusy(end - start);
  for (const Row& r : done) {
    SettleRow(r, status, end, status.ok() ? JobOutcome::kOk : JobOutcome::kError);
  }
}

void Batcher::StepLoop() {
  step_runner_->OnThreadStart();
  while (true) {
    PullSubmitted();
    const TimePoint now = clock_.Now();
    SweepPending(now);
    SweepRunning(now);
    const bool stopping = stopping_.load(std::memory_order_seq_cst);
    if (stopping && shutdown_mode_.load(std::memory_order_relaxed) == ShutdownMode::kFailQueued) {
      ShutdownRunning(now);
      FailPendingForShutdown(now);
    }

    if (pending_.empty() && running_.empty()) {
      if (WaitIdle(stopping)) break;
      continue;
    }

    std::vector<Job*> candidates;
    const StepView view = BuildStepView(candidates, stopping, now);
    const StepDecision decision = DecideStep(view, now, options_, stage_cost_);
    if (decision.wait) {
      WaitUntil(decision.wait_until, view.active_streams);
      continue;
    }
    {
      MutexLock lock(stats_mu_);
      ++stats_.step_decisions[static_cast<int>(decision.reason)];
    }
    if (observer_ != nullptr) observer_->OnStepDecision(decision.reason, decision.cap);

    if (!decision.admit.empty()) {
      std::vector<Job*> jobs;
      for (int i : decision.admit) jobs.push_back(candidates[i]);
      RemovePending(jobs);
      last_join_ = now;
      std::vector<Job*> deferred;
      AdmitJobs(std::move(jobs), decision.trigger, options_.bisect_failures, deferred);
      for (Job* j : deferred) {
        // Back in front of its stream's later jobs, so the stream keeps order.
        auto it = std::find_if(pending_.begin(), pending_.end(),
                               [&](const Job* p) { return p->stream_id() == j->stream_id(); });
        pending_.insert(it, j);
        queued_.fetch_add(1, std::memory_order_relaxed);
      }
      if (observer_ != nullptr) observer_->OnQueueDepth(queue_depth());
    }
    RetireDone();  // rows with no step to take (n_timesteps 0)
    if (running_.empty()) continue;
    StepRunning();
    RetireDone();
  }
}

}  // namespace vocoder::batcher

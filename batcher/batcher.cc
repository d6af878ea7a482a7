#include "batcher/batcher.h"

#include <algorithm>
#include <exception>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batcher/exit_check.h"

namespace vocoder::batcher {

int CountVoices(absl::Span<Job* const> jobs) {
  std::set<Fingerprint> voices;
  for (const Job* j : jobs) voices.insert(j->key().voice);
  return static_cast<int>(voices.size());
}

const char* SchedulingName(Scheduling scheduling) {
  return scheduling == Scheduling::kStep ? "step" : "batch";
}

double BatcherStats::mean_batch_size() const {
  int64_t jobs = 0;
  for (auto [size, n] : batch_sizes) jobs += size * n;
  return batches > 0 ? double(jobs) / double(batches) : 0.0;
}

double BatcherStats::padding_waste() const {
  return padded_tokens > 0 ? 1.0 - double(real_tokens) / double(padded_tokens) : 0.0;
}

absl::Status Validate(const BatcherOptions& o) {
  auto bad = [](const char* field, const auto& why) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", why));
  };
  if (o.max_batch_size <= 0) {
    return bad("max_batch_size", absl::StrCat("must be positive; was ", o.max_batch_size));
  }
  if (o.max_batch_tokens < 0) {
    return bad("max_batch_tokens",
               absl::StrCat("must be >= 0 (0 = none); was ", o.max_batch_tokens));
  }
  if (!(o.early_fire_fraction > 0 && o.early_fire_fraction <= 1)) {
    return bad("early_fire_fraction",
               absl::StrCat("must be in (0, 1]; was ", o.early_fire_fraction));
  }
  if (o.idle_grace.count() < 0) return bad("idle_grace", "must be >= 0");
  if (o.max_wait.count() <= 0) return bad("max_wait", "must be positive");
  if (!(o.max_padding_waste >= 0 && o.max_padding_waste < 1)) {
    return bad("max_padding_waste", absl::StrCat("must be in [0, 1); was ", o.max_padding_waste));
  }
  if (!(o.join_amortization >= 0 && o.join_amortization <= 100)) {
    return bad("join_amortization", absl::StrCat("must be in [0, 100]; was ", o.join_amortization));
  }
  if (o.max_queue_jobs <= 0) {
    return bad("max_queue_jobs", absl::StrCat("must be positive; was ", o.max_queue_jobs));
  }
  if (o.scheduling == Scheduling::kStep && o.grouping != Grouping::kMixed) {
    return bad("grouping", "must be mixed with scheduling step (rows of any voice share steps)");
  }
  if (o.initial_batch_cost.count() < 0 || o.initial_cost_per_token.count() < 0) {
    return bad("initial_batch_cost", "and initial_cost_per_token must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const BatcherOptions& options, Deps deps) {
  if (auto s = Validate(options); !s.ok()) return s;
  if (options.scheduling == Scheduling::kStep && deps.step_runner == nullptr) {
    return absl::InvalidArgumentError("scheduling step needs a StepRunner (Deps::step_runner)");
  }
  std::unique_ptr<Batcher> b(new Batcher(options, deps));
  b->thread_ = std::thread([raw = b.get()] { raw->Loop(); });
  return b;
}

Batcher::Batcher(const BatcherOptions& options, Deps deps)
    : options_(options),
      clock_(deps.clock),
      runner_(deps.runner),
      observer_(deps.observer),
      cost_(options.initial_batch_cost, options.initial_cost_per_token),
      step_runner_(deps.step_runner),
      // A whole solve is about encoder + 10 steps + HiFT: a stage's prior is
      // a twelfth of the batch prior.
      stage_cost_(options.initial_batch_cost / 12, options.initial_cost_per_token / 12) {}

Batcher::~Batcher() { Shutdown(); }

absl::Status Batcher::Submit(std::unique_ptr<Job>* job) {
  if (job == nullptr || *job == nullptr) return absl::InvalidArgumentError("Submit: null job");
  submitting_.fetch_add(1, std::memory_order_seq_cst);
  if (stopping_.load(std::memory_order_seq_cst)) {
    submitting_.fetch_sub(1, std::memory_order_seq_cst);
    rejected_stopping_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ != nullptr) observer_->OnReject(RejectReason::kShuttingDown);
    return absl::UnavailableError("vocoder is shutting down; retry on another replica");
  }
  const int64_t before = queued_.fetch_add(1, std::memory_order_relaxed);
  if (before >= options_.max_queue_jobs) {
    queued_.fetch_sub(1, std::memory_order_relaxed);
    submitting_.fetch_sub(1, std::memory_order_seq_cst);
    rejected_full_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ != nullptr) observer_->OnReject(RejectReason::kQueueFull);
    return absl::ResourceExhaustedError(
        absl::StrCat("vocoder queue is full (", options_.max_queue_jobs,
                     " jobs queued, --max-queue-jobs); retry after a short backoff"));
  }
  Job* raw = job->release();
  raw->enqueued_ = clock_.Now();
  raw->node_.job = raw;
  queue_.Push(&raw->node_);
  submitted_.fetch_add(1, std::memory_order_relaxed);
  submitting_.fetch_sub(1, std::memory_order_seq_cst);
  wakeup_.Notify();
  return absl::OkStatus();
}

void Batcher::StreamOpened() { active_streams_.fetch_add(1, std::memory_order_relaxed); }

void Batcher::StreamClosed() {
  active_streams_.fetch_sub(1, std::memory_order_seq_cst);
  wakeup_.Notify();  // fewer streams can make all_ready true
}

void Batcher::Shutdown(ShutdownMode mode) {
  MutexLock lock(shutdown_mu_);
  if (!thread_.joinable()) return;
  shutdown_mode_.store(mode, std::memory_order_relaxed);
  stopping_.store(true, std::memory_order_seq_cst);
  wakeup_.Wake();
  thread_.join();
}

BatcherStats Batcher::stats() const {
  BatcherStats s;
  {
    MutexLock lock(stats_mu_);
    s = stats_;
  }
  s.submitted = submitted_.load(std::memory_order_relaxed);
  s.rejected_queue_full = rejected_full_.load(std::memory_order_relaxed);
  s.rejected_shutting_down = rejected_stopping_.load(std::memory_order_relaxed);
  s.queue_depth = queue_depth();
  return s;
}

void Batcher::PullSubmitted() {
  while (!queue_.Empty()) {
    MpscNode* node = queue_.Pop();
    if (node == nullptr) continue;  // a push is half done; it completes within instructions
    Job* job = static_cast<Job::Node*>(node)->job;
    last_arrival_ = std::max(last_arrival_, job->enqueued());
    arrivals_.Arrive(job->enqueued());
    pending_.push_back(job);
  }
}

void Batcher::Settle(Job* job, const absl::Status& status, const BatchInfo& info,
                     JobOutcome outcome) {
  // Stats first: whoever observes the completion also sees it counted.
  {
    MutexLock lock(stats_mu_);
    switch (outcome) {
      case JobOutcome::kOk:
        ++stats_.completed_ok;
        break;
      case JobOutcome::kError:
        ++stats_.failed;
        break;
      case JobOutcome::kExpired:
        ++stats_.expired;
        break;
      case JobOutcome::kCancelled:
        ++stats_.cancelled;
        break;
      case JobOutcome::kShutdown:
        ++stats_.shutdown;
        break;
    }
    stats_.queue_wait_total += info.queue_wait;
    stats_.queue_wait_max = std::max(stats_.queue_wait_max, info.queue_wait);
  }
  if (observer_ != nullptr) observer_->OnJobDone(outcome, info.queue_wait);
  job->Complete(status, info);
  delete job;
}

void Batcher::RemovePending(const std::vector<Job*>& jobs) {
  const std::set<Job*> gone(jobs.begin(), jobs.end());
  std::erase_if(pending_, [&](Job* j) { return gone.count(j) > 0; });
  queued_.fetch_sub(static_cast<int64_t>(jobs.size()), std::memory_order_relaxed);
}

void Batcher::SweepPending(TimePoint now) {
  std::vector<Job*> dead;
  for (Job* j : pending_) {
    if (j->cancelled() || j->deadline() <= now) dead.push_back(j);
  }
  if (dead.empty()) return;
  RemovePending(dead);
  for (Job* j : dead) {
    BatchInfo info;
    info.queue_wait = now - j->enqueued();
    if (j->cancelled()) {
      Settle(j, absl::CancelledError("stream cancelled before its chunk reached the GPU"), info,
             JobOutcome::kCancelled);
    } else {
      Settle(j, absl::DeadlineExceededError("deadline passed while the chunk was queued"), info,
             JobOutcome::kExpired);
    }
  }
}

QueueView Batcher::BuildView(std::vector<std::vector<Job*>>& group_jobs) const {
  QueueView view;
  view.active_streams = active_streams_.load(std::memory_order_relaxed);
  view.last_arrival = last_arrival_;
  std::map<BatchKey, int> index;
  std::set<uint64_t> seen_streams;
  for (Job* j : pending_) {
    if (!seen_streams.insert(j->stream_id()).second) continue;  // not the stream's head
    BatchKey key = j->key();
    if (options_.grouping == Grouping::kMixed) key.voice = Fingerprint{};
    auto [it, inserted] = index.emplace(key, static_cast<int>(view.groups.size()));
    if (inserted) {
      view.groups.push_back(GroupView{key, {}});
      group_jobs.emplace_back();
    }
    view.groups[it->second].jobs.push_back(
        PendingJob{j->stream_id(), j->enqueued(), j->deadline(), j->cost()});
    group_jobs[it->second].push_back(j);
  }
  return view;
}

void Batcher::NoteOomSplit(int size) {
  {
    MutexLock lock(stats_mu_);
    ++stats_.oom_splits;
  }
  if (observer_ != nullptr) observer_->OnOutOfMemorySplit(size);
}

absl::Status Batcher::TooBigAlone(const Job& job, const absl::Status& oom) {
  // The same chunk would fail the same way on every retry, so not
  // ResourceExhausted (which clients retry).
  return absl::FailedPreconditionError(absl::StrCat(
      "this chunk does not fit in device memory even in a batch of its own (", job.cost(),
      " tokens with the voice prompt); retrying it will fail again: send shorter chunks or "
      "use a shorter voice prompt (",
      oom.message(), ")"));
}

void Batcher::RunBatch(std::vector<Job*> jobs, Trigger trigger, bool allow_bisect) {
  const TimePoint start = clock_.Now();
  absl::Status status;
  try {
    status = runner_.Run(absl::MakeConstSpan(jobs));
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("model runner threw: ", e.what()));
  } catch (...) {
    status = absl::InternalError("model runner threw a non-standard exception");
  }
  const TimePoint end = clock_.Now();

  int64_t longest = 0;
  int64_t real = 0;
  for (Job* j : jobs) {
    longest = std::max(longest, j->cost());
    real += j->cost();
  }
  const int64_t padded = longest * static_cast<int64_t>(jobs.size());
  if (status.ok()) cost_.Observe(padded, end - start);

  BatchRecord record{trigger,
                     static_cast<int>(jobs.size()),
                     options_.max_batch_size,
                     padded,
                     real,
                     end - start,
                     status.ok(),
                     CountVoices(jobs)};
  {
    MutexLock lock(stats_mu_);
    ++stats_.batches;
    ++stats_.batches_by_trigger[static_cast<int>(trigger)];
    ++stats_.batch_sizes[record.size];
    stats_.padded_tokens += padded;
    stats_.real_tokens += real;
    stats_.compute_total += record.compute;
  }
  if (observer_ != nullptr) {
    observer_->OnBatch(record);
    observer_->OnBusy(end - start);
  }

  if (status.code() == absl::StatusCode::kResourceExhausted) {
    if (jobs.size() > 1) {
      // Out of device memory (the BatchRunner contract): the batch does not
      // fit. Run its halves, each split again if it still does not fit, so
      // only a job that does not fit alone fails.
      NoteOomSplit(static_cast<int>(jobs.size()));
      const auto mid = jobs.begin() + static_cast<std::ptrdiff_t>(jobs.size() / 2);
      RunBatch(std::vector<Job*>(jobs.begin(), mid), trigger, allow_bisect);
      RunBatch(std::vector<Job*>(mid, jobs.end()), trigger, allow_bisect);
      return;
    }
    status = TooBigAlone(*jobs[0], status);
  }
  if (!status.ok() && allow_bisect && jobs.size() > 1) {
    // Isolate a poison job: each half runs once more, without further bisection.
    const auto mid = jobs.begin() + static_cast<std::ptrdiff_t>(jobs.size() / 2);
    std::vector<Job*> left(jobs.begin(), mid);
    std::vector<Job*> right(mid, jobs.end());
    RunBatch(std::move(left), trigger, false);
    RunBatch(std::move(right), trigger, false);
    return;
  }
  for (Job* j : jobs) {
    BatchInfo info{start - j->enqueued(), end - start, static_cast<int>(jobs.size()), trigger};
    Settle(j, status, info, status.ok() ? JobOutcome::kOk : JobOutcome::kError);
  }
}

void Batcher::RunPlan(const Decision& decision, const std::vector<std::vector<Job*>>& group_jobs) {
  std::vector<std::vector<Job*>> batches;
  std::vector<Job*> dispatched;
  std::set<int> groups;
  for (const PlannedBatch& pb : decision.batches) {
    std::vector<Job*> jobs;
    for (int i : pb.jobs) jobs.push_back(group_jobs[pb.group][i]);
    dispatched.insert(dispatched.end(), jobs.begin(), jobs.end());
    groups.insert(pb.group);
    batches.push_back(std::move(jobs));
  }
  RemovePending(dispatched);
  if (observer_ != nullptr) observer_->OnQueueDepth(queue_depth());
  {
    MutexLock lock(stats_mu_);
    ++stats_.groups_per_drain[static_cast<int>(groups.size())];
  }
  if (observer_ != nullptr) {
    observer_->OnDrain(static_cast<int>(groups.size()), static_cast<int>(batches.size()));
  }
  for (auto& b : batches) RunBatch(std::move(b), decision.trigger, options_.bisect_failures);
}

bool Batcher::IdleForExit() const {
  struct Probe final : ExitProbe {
    explicit Probe(const Batcher& b) : b(b) {}
    int Submitting() const override { return b.submitting_.load(std::memory_order_seq_cst); }
    bool QueueEmpty() const override { return b.queue_.Empty(); }
    const Batcher& b;
  };
  return pending_.empty() && running_.empty() && NoSubmitCanLand(Probe(*this));
}

bool Batcher::WaitIdle(bool stopping) {
  if (stopping) {
    if (IdleForExit()) return true;
    std::this_thread::yield();  // a Submit is between its checks; it lands at once
    return false;
  }
  const Wakeup::Token token = wakeup_.PrepareWait();
  if (!queue_.Empty() || stopping_.load(std::memory_order_seq_cst)) {
    wakeup_.CancelWait();
    return false;
  }
  clock_.SleepUntil(kNever, wakeup_, token);
  return false;
}

void Batcher::WaitUntil(TimePoint until, int seen_streams) {
  const Wakeup::Token token = wakeup_.PrepareWait();
  if (!queue_.Empty() || stopping_.load(std::memory_order_seq_cst) ||
      seen_streams != active_streams_.load(std::memory_order_seq_cst)) {
    wakeup_.CancelWait();
    return;
  }
  clock_.SleepUntil(until, wakeup_, token);
}

void Batcher::FailPendingForShutdown(TimePoint now) {
  std::vector<Job*> all = pending_;
  RemovePending(all);
  for (Job* j : all) {
    BatchInfo info;
    info.queue_wait = now - j->enqueued();
    Settle(j, absl::UnavailableError("vocoder shut down before this chunk ran"), info,
           JobOutcome::kShutdown);
  }
}

void Batcher::Loop() {
  if (options_.scheduling == Scheduling::kStep) {
    StepLoop();
    return;
  }
  runner_.OnThreadStart();
  while (true) {
    PullSubmitted();
    const TimePoint now = clock_.Now();
    SweepPending(now);
    const bool stopping = stopping_.load(std::memory_order_seq_cst);

    if (pending_.empty()) {
      if (WaitIdle(stopping)) break;
      continue;
    }

    std::vector<std::vector<Job*>> group_jobs;
    const QueueView view = BuildView(group_jobs);
    if (stopping) {
      if (shutdown_mode_.load(std::memory_order_relaxed) == ShutdownMode::kRunQueued) {
        // No policy while stopping: plan every group and run it now.
        Decision drain;
        drain.run = true;
        drain.trigger = Trigger::kDrain;
        for (int g = 0; g < static_cast<int>(view.groups.size()); ++g) {
          auto planned = PlanGroup(view.groups[g], g, options_);
          drain.batches.insert(drain.batches.end(), planned.begin(), planned.end());
        }
        RunPlan(drain, group_jobs);
      } else {
        FailPendingForShutdown(now);
      }
      continue;
    }

    const Decision decision = Decide(view, now, options_, cost_);
    if (decision.run) {
      RunPlan(decision, group_jobs);
      continue;
    }
    WaitUntil(decision.wait_until, view.active_streams);
  }
}

}  // namespace vocoder::batcher

// Batcher: many submitting threads, one dedicated GPU thread.
//
// PARAMETERS AND BEHAVIOR
// Streaming handlers Submit() jobs from any thread; Submit never takes a lock
// (wait-free push onto an intrusive MPSC queue, then a lock-free doorbell) and
// never blocks. The GPU thread moves queued jobs into its own pending list,
// completes expired ones (DeadlineExceeded) and cancelled ones (Cancelled)
// before they reach the GPU, and asks the pure policy (policy.h) whether to run
// now or sleep until a time. When a trigger fires, every stream's head job is
// planned into batches (groups with the earliest deadline first; within a
// group, longest first, split by max_batch_size, max_batch_tokens and
// max_padding_waste), each batch goes to BatchRunner::Run, and each job is
// completed exactly once.
//
// Grouping: jobs group by BatchKey, i.e. by the content fingerprint of their
// voice (voice mode) and always by `compat` (n_timesteps). Never by identity.
//
// Failure: a batch whose Run fails fails only its own jobs; with
// bisect_failures a batch of several jobs is retried once as two halves, so a
// poison job takes down only its half. Exceptions from the runner become
// Internal errors. ResourceExhausted from the runner means "does not fit"
// (device out of memory): the batch is split in halves, recursively, and only
// a job that does not fit alone fails, with FailedPrecondition (retrying the
// same job cannot succeed; no retry hint). Shutdown runs (or fails with Unavailable) what is
// queued: nothing is left hanging.
//
// STEP SCHEDULING (options.scheduling == kStep; issue #13)
// Submit, the queue, the sweep of queued jobs and Shutdown are shared with
// batch scheduling. Instead of whole batches, the GPU thread keeps a running
// set of rows on a StepRunner and loops over step boundaries: sweep (queued
// and running jobs that were cancelled or expired complete at once with
// Cancelled / DeadlineExceeded; running ones leave through StepRunner::Drop),
// decide (DecideStep, step_policy.h: which queued jobs join, or how long an
// empty set waits), admit, one Step over every running row, and Retire of the
// rows whose own n_timesteps (key().compat) are done. Grouping must be kMixed
// (n_timesteps does not split the set).
// Failure rules, each completing every job exactly once:
// - Admit fails: none of its jobs joined. ResourceExhausted splits the
//   admission in halves, recursively; a single job that does not fit beside
//   running rows goes back to the queue and is admitted only into an empty set
//   (StepCandidate::alone; under sustained load the set may not empty before
//   its deadline, which then completes it); one that does not fit alone fails with
//   FailedPrecondition, as in batch mode. Any other error, with
//   bisect_failures, retries each half once, so a poison job fails only its
//   half; the failing jobs complete with the runner's error and never enter
//   the set.
// - Step fails: every running row's ODE state is gone. All running jobs fail
//   with the runner's status and the runner has emptied its set.
// - Retire fails: only the retiring jobs fail; their rows left the set.
// - Exceptions from the runner are Internal errors, as above.
// - Shutdown kRunQueued keeps stepping, admitting (trigger drain) until nothing
//   is queued or running; kFailQueued drops every running row and completes
//   running and queued jobs with Unavailable.
//
// THREADS
// Submit, StreamOpened/StreamClosed, stats and queue_depth are thread-safe.
// BatchRunner::Run, the StepRunner methods and Job::Complete run on the GPU
// thread only.
#ifndef VOCODER_BATCHER_BATCHER_H_
#define VOCODER_BATCHER_BATCHER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "batcher/arrival_rate.h"
#include "batcher/clock.h"
#include "batcher/cost_model.h"
#include "batcher/job.h"
#include "batcher/mpsc_queue.h"
#include "batcher/mutex.h"
#include "batcher/options.h"
#include "batcher/policy.h"
#include "batcher/stage_cost_model.h"
#include "batcher/stats.h"
#include "batcher/step_policy.h"
#include "batcher/step_runner.h"

namespace vocoder::batcher {

// Implemented by the model runner (tests: fakes). Called on the GPU thread.
class BatchRunner {
 public:
  virtual ~BatchRunner() = default;
  // Once, on the GPU thread, before any Run (e.g. select the CUDA device).
  virtual void OnThreadStart() {}
  // Runs every job of the batch and stores each one's output in the job (the
  // runner knows the Job subclass). A non-OK status fails the whole batch;
  // ResourceExhausted means the batch does not fit on the device (out of
  // memory), and the batcher retries it in smaller batches.
  // All jobs share compat; in voice mode they also share the voice.
  virtual absl::Status Run(absl::Span<Job* const> jobs) = 0;
};

// Distinct voice fingerprints among `jobs` (BatchRecord/StepRecord::voices).
int CountVoices(absl::Span<Job* const> jobs);

class Batcher {
 public:
  struct Deps {
    Clock& clock;
    BatchRunner& runner;
    BatcherObserver* observer = nullptr;  // optional; must outlive the batcher
    StepRunner* step_runner = nullptr;    // required by Scheduling::kStep
  };
  enum class ShutdownMode {
    kRunQueued,   // run what is queued (trigger "drain"), then stop
    kFailQueued,  // complete what is queued with Unavailable
  };

  // Validates `options` (InvalidArgument naming the field; also when kStep
  // has no step_runner) and starts the GPU thread. `deps` must outlive the batcher.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const BatcherOptions& options, Deps deps);

  // Shuts down with kRunQueued if Shutdown was not called.
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Thread-safe; lock-free; returns quickly without blocking. Takes ownership
  // iff it returns OK (then *job is null and the job will be completed exactly
  // once). Errors: ResourceExhausted (max_queue_jobs queued; retry later),
  // Unavailable (shutting down), InvalidArgument (null job).
  absl::Status Submit(std::unique_ptr<Job>* job);

  // Thread-safe. The server reports open streams so the all_ready trigger
  // knows when nothing more can arrive.
  void StreamOpened();
  void StreamClosed();

  // Thread-safe, blocking: stops accepting, settles queued jobs per `mode`,
  // joins the GPU thread. Idempotent.
  void Shutdown(ShutdownMode mode = ShutdownMode::kRunQueued);

  BatcherStats stats() const;
  int64_t queue_depth() const { return queued_.load(std::memory_order_relaxed); }
  const BatcherOptions& options() const { return options_; }

 private:
  Batcher(const BatcherOptions& options, Deps deps);
  void Loop();
  void PullSubmitted();
  void SweepPending(TimePoint now);
  QueueView BuildView(std::vector<std::vector<Job*>>& group_jobs) const;
  void RunPlan(const Decision& decision, const std::vector<std::vector<Job*>>& group_jobs);
  void RunBatch(std::vector<Job*> jobs, Trigger trigger, bool allow_bisect);
  // Both loops, when jobs ran out of device memory: counts a split of `size`
  // jobs into halves (stats, observer); and the error for a job that ran out
  // alone (`oom` the runner's ResourceExhausted).
  void NoteOomSplit(int size);
  static absl::Status TooBigAlone(const Job& job, const absl::Status& oom);
  void Settle(Job* job, const absl::Status& status, const BatchInfo& info, JobOutcome outcome);
  void RemovePending(const std::vector<Job*>& jobs);
  // Stopping only: nothing pending and no accepted Submit can still land
  // (exit_check.h: the in-flight count is read before the queue).
  bool IdleForExit() const;
  // Both loops, when nothing is queued or running: returns true when the
  // thread may exit (stopping and idle); otherwise sleeps until a Submit or
  // Shutdown wakes it (or yields while a Submit is landing).
  bool WaitIdle(bool stopping);
  // Both loops, when the policy said wait: sleeps until `until`, an arrival,
  // Shutdown, or a change from `seen_streams` open streams.
  void WaitUntil(TimePoint until, int seen_streams);
  // Shutdown with kFailQueued: completes every queued job with Unavailable.
  void FailPendingForShutdown(TimePoint now);

  // Step scheduling (step_loop.cc); GPU thread only.
  struct Row {
    Job* job = nullptr;
    int steps_left = 0;
    TimePoint admitted{};
    int batch_size = 0;  // running rows right after its admission
    Trigger trigger = Trigger::kJoin;
  };
  void StepLoop();
  StepView BuildStepView(std::vector<Job*>& candidates, bool draining, TimePoint now) const;
  void SweepRunning(TimePoint now);
  void AdmitJobs(std::vector<Job*> jobs, Trigger trigger, bool allow_bisect,
                 std::vector<Job*>& deferred);
  void StepRunning();
  void RetireDone();
  void SettleRow(const Row& row, const absl::Status& status, TimePoint end, JobOutcome outcome);
  void ShutdownRunning(TimePoint now);

  const BatcherOptions options_;
  Clock& clock_;
  BatchRunner& runner_;
  BatcherObserver* const observer_;

  // Producer side.
  MpscQueue queue_;
  Wakeup wakeup_;
  std::atomic<int64_t> queued_{0};
  std::atomic<int> submitting_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> active_streams_{0};
  std::atomic<int64_t> submitted_{0};
  std::atomic<int64_t> rejected_full_{0};
  std::atomic<int64_t> rejected_stopping_{0};
  std::atomic<ShutdownMode> shutdown_mode_{ShutdownMode::kRunQueued};

  // GPU thread only.
  std::vector<Job*> pending_;  // arrival order
  TimePoint last_arrival_{};
  ArrivalRate arrivals_;
  CostModel cost_;
  StepRunner* const step_runner_;
  StageCostModel stage_cost_;
  std::vector<Row> running_;  // step scheduling: admission order
  TimePoint last_join_{};     // step scheduling: when jobs last joined running_

  // batcher/mutex.h (a std::mutex, which TSan sees, with the annotations),
  // not absl::Mutex: Debian's Abseil is not built with TSan annotations.
  mutable Mutex stats_mu_;
  BatcherStats stats_ ABSL_GUARDED_BY(stats_mu_);

  Mutex shutdown_mu_;
  std::thread thread_;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_BATCHER_H_

// What the batcher decided and how it went: a snapshot for tests, logs and
// the benchmark, and an observer interface that the server implements with
// Prometheus metrics (the batcher knows nothing of Prometheus).
#ifndef VOCODER_BATCHER_STATS_H_
#define VOCODER_BATCHER_STATS_H_

#include <array>
#include <cstdint>
#include <map>

#include "batcher/clock.h"
#include "batcher/job.h"
#include "batcher/step_policy.h"

namespace vocoder::batcher {

enum class JobOutcome : uint8_t { kOk, kError, kExpired, kCancelled, kShutdown };
enum class RejectReason : uint8_t { kQueueFull, kShuttingDown };

struct BatchRecord {
  Trigger trigger = Trigger::kIdle;
  int size = 0;
  int max_batch_size = 0;
  int64_t padded_tokens = 0;  // rows x longest
  int64_t real_tokens = 0;    // sum of job costs
  Duration compute{};
  bool ok = true;
  int voices = 0;  // distinct voice fingerprints among its jobs
  double fill_ratio() const { return max_batch_size > 0 ? double(size) / max_batch_size : 0; }
};

// One Euler step over the running set (step scheduling).
struct StepRecord {
  int rows = 0;               // running rows stepped
  int64_t padded_tokens = 0;  // rows x longest
  int64_t real_tokens = 0;    // sum of the rows' costs
  int voices = 0;             // distinct voice fingerprints among the rows
  Duration compute{};
  bool ok = true;
};

// Called by the batcher. OnReject runs on submitting threads (must be thread-
// safe and cheap); the others run on the batcher's thread, after the work and
// outside the batcher's locks.
class BatcherObserver {
 public:
  virtual ~BatcherObserver() = default;
  virtual void OnReject(RejectReason) {}
  virtual void OnJobDone(JobOutcome, Duration /*queue_wait*/) {}
  virtual void OnBatch(const BatchRecord&) {}
  // One decision's worth of batches: `groups` voice groups in `batches` batches.
  virtual void OnDrain(int /*groups*/, int /*batches*/) {}
  virtual void OnQueueDepth(int64_t /*depth*/) {}
  virtual void OnBusy(Duration /*gpu_thread_busy*/) {}
  // A batch of `size` jobs ran out of device memory and is retried as halves.
  virtual void OnOutOfMemorySplit(int /*size*/) {}
  // Step scheduling: each acting decision (not kWait) with the row cap it
  // applied, then each step.
  virtual void OnStepDecision(StepReason /*reason*/, int /*cap*/) {}
  virtual void OnStep(const StepRecord&) {}
};

struct BatcherStats {
  int64_t submitted = 0;
  int64_t rejected_queue_full = 0;
  int64_t rejected_shutting_down = 0;
  int64_t completed_ok = 0;
  int64_t failed = 0;
  int64_t expired = 0;
  int64_t cancelled = 0;
  int64_t shutdown = 0;
  int64_t batches = 0;
  int64_t oom_splits = 0;  // batches split because they did not fit on the device
  std::array<int64_t, kNumTriggers> batches_by_trigger{};
  std::map<int, int64_t> batch_sizes;       // size -> batches
  std::map<int, int64_t> groups_per_drain;  // groups -> drains
  int64_t padded_tokens = 0;
  int64_t real_tokens = 0;
  Duration queue_wait_total{};
  Duration queue_wait_max{};
  Duration compute_total{};
  int64_t queue_depth = 0;
  // Step scheduling.
  int64_t steps = 0;
  int64_t step_rows = 0;                                  // running rows summed over steps
  int64_t admissions = 0;                                 // StepRunner::Admit calls
  int64_t retirements = 0;                                // StepRunner::Retire calls
  std::array<int64_t, kNumStepReasons> step_decisions{};  // acting decisions by reason
  std::map<int, int64_t> running_rows;                    // rows -> steps

  int64_t triggered(Trigger t) const { return batches_by_trigger[static_cast<int>(t)]; }
  double mean_batch_size() const;
  double padding_waste() const;  // 1 - real / padded
  int64_t decided(StepReason r) const { return step_decisions[static_cast<int>(r)]; }
  double mean_running_rows() const { return steps > 0 ? double(step_rows) / double(steps) : 0.0; }
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_STATS_H_

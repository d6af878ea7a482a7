// The batcher's view of a running set (issue #13, step scheduling): jobs join
// it between Euler steps, every running row advances one step per Step(), and
// rows leave when their own schedule is done (Retire) or their job no longer
// wants a result (Drop). In batcher terms only: no model, no torch, no gRPC.
// The server implements it over the model's running-set API
// (server/model_runner.h); tests use a fake (tests/testing/fake_step_runner.h).
//
// THREADS: every method is called on the batcher's GPU thread only, one at a
// time. Methods never throw (the batcher turns an exception into Internal
// anyway).
//
// ROWS: a job is a row from a successful Admit until Retire or Drop takes it
// out, or until a failed Step empties the set. Each row follows its own
// schedule of job->key().compat Euler steps (n_timesteps); the batcher counts
// the steps too and retires a job once Step() returned OK that many times
// since its admission.
#ifndef VOCODER_BATCHER_STEP_RUNNER_H_
#define VOCODER_BATCHER_STEP_RUNNER_H_

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "batcher/job.h"

namespace vocoder::batcher {

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Once, on the GPU thread, before any other call (e.g. select the device).
  virtual void OnThreadStart() {}
  // Encodes `jobs` (none of them running) and appends them as running rows,
  // each at step 0 of its own n_timesteps (job->key().compat). On error none
  // of them joined and the running rows are untouched. InvalidArgument (a bad
  // job), ResourceExhausted (does not fit beside the running rows: the batcher
  // admits fewer), Internal.
  virtual absl::Status Admit(absl::Span<Job* const> jobs) = 0;
  // One estimator step over every running row that is not done. On error
  // every running row is lost: the runner empties its set and the batcher
  // fails those jobs with this status.
  virtual absl::Status Step() = 0;
  // HiFT and outputs for `jobs`, running rows that finished their steps. The
  // rows leave the set whether or not it succeeds; on error the batcher fails
  // exactly these jobs.
  virtual absl::Status Retire(absl::Span<Job* const> jobs) = 0;
  // Running rows of cancelled, expired or shut-down jobs leave the set without
  // output.
  virtual void Drop(absl::Span<Job* const> jobs) = 0;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_STEP_RUNNER_H_

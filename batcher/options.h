// Batcher options: documented defaults, units in the names, validated by
// Validate() (Batcher::Create calls it).
#ifndef VOCODER_BATCHER_OPTIONS_H_
#define VOCODER_BATCHER_OPTIONS_H_

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"

namespace vocoder::batcher {

enum class Grouping {
  // One voice per batch: rows share the prompt, so less padding.
  kVoice,
  // Voices share batches (the model runner takes per-row voices); jobs still
  // group by `compat` (n_timesteps). Default: with many voices and few streams
  // each, voice mode forms batches of one (see docs/benchmarks.md).
  kMixed,
};

// How the GPU thread runs the flow solve (issue #13).
enum class Scheduling {
  // Whole-solve batching: a batch runs encoder, every Euler step and HiFT
  // before the next batch forms (BatchRunner, policy.h).
  kBatch,
  // Step-level continuous batching: a running set of rows that jobs join
  // between Euler steps and leave when their own schedule is done
  // (StepRunner, step_policy.h). Requires Grouping::kMixed.
  kStep,
};
const char* SchedulingName(Scheduling scheduling);

struct BatcherOptions {
  // Jobs per batch. The standard model's estimator runs classifier-free
  // guidance by doubling the batch, so its GPU sees 2 * max_batch_size rows
  // (Turbo's sees max_batch_size: no guidance).
  int max_batch_size = 32;
  // Padded tokens per batch (rows x longest row's cost); 0 = no budget.
  int64_t max_batch_tokens = 0;
  // near_full fires once a group's fill ratio (jobs / max_batch_size, or
  // padded tokens / max_batch_tokens, whichever is larger) reaches this.
  double early_fire_fraction = 0.8;
  // idle fires when no job arrived for this long while the GPU is idle: a
  // lone stream does not wait for peers that are not coming.
  std::chrono::microseconds idle_grace{200};
  // max_wait fires when the oldest queued job has waited this long.
  std::chrono::microseconds max_wait{5000};
  // A group splits into several batches rather than exceed this share of
  // padded (wasted) tokens, in [0, 1).
  double max_padding_waste = 0.3;
  // Queued jobs (submitted, not yet dispatched) before Submit fails with
  // ResourceExhausted.
  int max_queue_jobs = 1024;
  Grouping grouping = Grouping::kMixed;
  // kStep needs a StepRunner in Batcher::Deps. max_batch_size, max_batch_tokens
  // and max_padding_waste then bound the running set; early_fire_fraction,
  // idle_grace and max_wait decide when an empty set starts (step_policy.h).
  Scheduling scheduling = Scheduling::kBatch;
  // kStep: queued jobs join running rows as a cohort once they have waited,
  // together, this many times the device time a separate join costs the set
  // (step_policy.h, rule 4). 0: every step boundary admits.
  double join_amortization = 1.0;
  // When a batch of several jobs fails, run each half once more to isolate a
  // poison job, so one bad input fails only its own half.
  bool bisect_failures = true;
  // Prior of the online cost model (predicted batch run time) before any
  // batch was measured: fixed cost + per padded token.
  std::chrono::microseconds initial_batch_cost{20000};
  std::chrono::nanoseconds initial_cost_per_token{20000};
};

// InvalidArgument naming the field, e.g. "max_batch_size must be positive; was 0".
absl::Status Validate(const BatcherOptions& options);

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_OPTIONS_H_

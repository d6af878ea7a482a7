// The batching decision as a pure, deterministic function (after Triton's
// "return the wait"): given what is queued and the time, either run batches
// now, with the trigger that fired, or wait until a given time. No threads, no
// clock: tested with plain values.
//
// The view holds only the head job of each stream (a stream's later jobs
// depend on the earlier ones' outputs and wait for the next decision), so a
// plan never puts two jobs of one stream in a batch and keeps stream order.
#ifndef VOCODER_BATCHER_POLICY_H_
#define VOCODER_BATCHER_POLICY_H_

#include <cstdint>
#include <vector>

#include "batcher/clock.h"
#include "batcher/cost_model.h"
#include "batcher/job.h"
#include "batcher/options.h"

namespace vocoder::batcher {

struct PendingJob {
  uint64_t stream_id = 0;
  TimePoint enqueued{};
  TimePoint deadline = kNever;
  int64_t cost = 1;
};

// Jobs that may share a batch (same BatchKey under the grouping mode).
struct GroupView {
  BatchKey key;
  std::vector<PendingJob> jobs;
};

struct QueueView {
  std::vector<GroupView> groups;
  // Streams that may still submit (the server counts open streams); 0 =
  // unknown, which disables all_ready.
  int active_streams = 0;
  TimePoint last_arrival{};
};

// One batch of a plan: indices into view.groups[group].jobs.
struct PlannedBatch {
  int group = 0;
  std::vector<int> jobs;
  int64_t padded_tokens = 0;  // rows x longest cost
  int64_t real_tokens = 0;    // sum of costs
};

struct Decision {
  bool run = false;
  Trigger trigger = Trigger::kIdle;  // when run
  TimePoint wait_until = kNever;     // when !run: re-decide then (or on arrival)
  // When run: every queued head job, groups with the earliest deadline first,
  // each group sorted by cost and split by size, token budget and padding.
  std::vector<PlannedBatch> batches;
};

// `view` must not hold expired or cancelled jobs (the batcher completes those
// first) and must hold at least one job.
Decision Decide(const QueueView& view, TimePoint now, const BatcherOptions& options,
                const CostModel& cost);

// Splits one group into batches (exposed for tests and the benchmark).
std::vector<PlannedBatch> PlanGroup(const GroupView& group, int group_index,
                                    const BatcherOptions& options);

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_POLICY_H_

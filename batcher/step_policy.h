// The step-scheduling decision (issue #13) as a pure, deterministic function,
// like Decide (policy.h): given the queued head jobs, the running rows and the
// time, return which jobs join the running set now and that the set then
// takes one Euler step, or the time to wait until. No threads, no clock:
// tested with plain values.
//
// THE RULE. Called at every step boundary (after finished rows were retired
// and cancelled or expired ones dropped):
//
// 1. Empty running set: start it when a batch trigger of Decide fires, with
//    the same options and the same meaning (full and near_full against the
//    row cap below, all_ready, deadline, max_wait, idle; drain while shutting
//    down); otherwise wait until the earliest of them. The decision's trigger
//    is that batch trigger.
// 2. Rows running: never wait (an idle device helps no one); candidates are
//    considered for admission, then the set steps. Joiners get trigger kJoin.
// 3. Candidates are the queued head jobs of streams with no running row (a
//    stream's next chunk depends on its running one), earliest deadline
//    first, then oldest. Each is admitted, greedily in that order, when the
//    running set with it and the jobs admitted before it
//    a. has at most `cap` rows, the learned throughput cap:
//       StageCostModel::BestRows at the set's padded length (the largest row
//       count whose predicted step time per row is within 5 % of the best),
//       never above max_batch_size;
//    b. keeps rows x longest within max_batch_tokens (when set);
//    c. wastes at most max_padding_waste of its padded tokens (1 - sum of
//       costs / (rows x longest)), unless the job has queued for max_wait
//       already (so padding delays a job, never starves it), or unless the set
//       wasted more before (admission may not make it worse than it is);
//    d. keeps every running row's deadline that it would keep without the
//       admission: now + encoder(admitted) + steps_left x step(rows', T') +
//       hift(1 row) against now + steps_left x step(rows, T) + hift(1 row).
//    A job marked `alone` (it did not fit on the device beside running rows)
//    is admitted only into an empty set, and as the only admitted job.
// 4. Rows running, the admitted candidates join as a cohort, not one by one:
//    each separate join costs the set one more encoder call now and one more
//    HiFT call when the joiners retire (StageCostModel::JoinOverhead, F), on
//    a device where those calls cost about the same for 1 row as for 8. So
//    the admitted candidates join now only when
//    a. one of them would miss its deadline if it waited one more step; or
//    b. they have waited together at least as long as a separate join costs
//       the set: sum(now - max(enqueued, last_join)) >= join_amortization x
//       rows' x F, with rows' the rows after the join (ski rental: the delay
//       a join imposes is paid once enough delay has been saved for it;
//       never more than twice the best choice in hindsight).
//    c. no more joiners are expected before b would hold: at the recent
//       arrival rate, fewer than one job arrives in the time the admitted
//       ones still have to wait, (owed - waited) / n. Gathering is a bet
//       that others come; at low load they do not, and the wait would only
//       delay the few that did.
//    Otherwise they wait for the next boundary (reason gather) and the set
//    steps. A full set gathers too: slots that retiring rows free join
//    together rather than a few at each boundary, which on a device whose
//    step time grows with rows costs the running rows nothing (fewer rows,
//    shorter steps) and saves the calls. With F = 0 (or join_amortization 0)
//    every boundary admits.
// 5. n_timesteps never splits the set: every row follows its own schedule.
//
// The decision's reason (for /metrics) says why the admit list is what it is:
// start / join when it admits jobs; gather when admissible jobs wait for a
// cohort; otherwise step when nothing was queued, or why the first candidate
// in order stayed queued (cap, full, padding, deadline, alone).
#ifndef VOCODER_BATCHER_STEP_POLICY_H_
#define VOCODER_BATCHER_STEP_POLICY_H_

#include <cstdint>
#include <vector>

#include "batcher/clock.h"
#include "batcher/job.h"
#include "batcher/options.h"
#include "batcher/stage_cost_model.h"

namespace vocoder::batcher {

// A queued head job of a stream with no running row.
struct StepCandidate {
  uint64_t stream_id = 0;
  TimePoint enqueued{};
  TimePoint deadline = kNever;
  int64_t cost = 1;     // tokens (Job::cost)
  int n_timesteps = 1;  // its own schedule (Job::key().compat)
  bool alone = false;   // ran out of device memory beside running rows before
};

// A row of the running set.
struct RunningRow {
  int64_t cost = 1;    // tokens
  int steps_left = 1;  // Euler steps it still needs (>= 1)
  TimePoint deadline = kNever;
};

struct StepView {
  std::vector<StepCandidate> queued;  // arrival order
  std::vector<RunningRow> running;
  // As QueueView: streams that may still submit (0 = unknown), last arrival.
  int active_streams = 0;
  TimePoint last_arrival{};
  // When jobs last joined the running set (kNever-free: TimePoint{} = never).
  // Rule 4 counts a job's wait from then at the latest: a wait that no join
  // could have ended (the set was full, or the job was held back) is not
  // delay that gathering saved.
  TimePoint last_join{};
  // Jobs per second arriving lately (ArrivalRate; 0 = none seen). Rule 4
  // gathers only while more joiners are expected.
  double arrival_rate_hz = 0;
  bool draining = false;  // shutting down with kRunQueued: start at once
};

enum class StepReason : uint8_t {
  kStart,     // the running set was empty; a batch trigger started it
  kJoin,      // queued jobs join the running rows at this step boundary
  kStep,      // nothing queued: the running rows step
  kCap,       // queued jobs wait: the set is at the learned throughput cap
  kFull,      // queued jobs wait: max_batch_size or max_batch_tokens reached
  kPadding,   // queued jobs wait: they would pad the set beyond max_padding_waste
  kDeadline,  // queued jobs wait: their encoder call would make a running row late
  kAlone,     // a job that fits only alone waits for the set to empty
  kGather,    // queued jobs wait to join as a cohort (rule 4)
  kWait,      // empty set, no trigger yet: wait (not an acting decision)
};
inline constexpr int kNumStepReasons = 10;
const char* StepReasonName(StepReason reason);

struct StepDecision {
  bool wait = false;              // true: re-decide at wait_until (or on arrival)
  TimePoint wait_until = kNever;  // when wait
  StepReason reason = StepReason::kWait;
  Trigger trigger = Trigger::kJoin;  // for the admitted jobs' BatchInfo
  std::vector<int> admit;            // indices into view.queued, in admission order
  int cap = 0;                       // the row cap applied (<= max_batch_size)
};

// `view` must not hold expired or cancelled jobs, nor rows with no step left.
StepDecision DecideStep(const StepView& view, TimePoint now, const BatcherOptions& options,
                        const StageCostModel& cost);

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_STEP_POLICY_H_

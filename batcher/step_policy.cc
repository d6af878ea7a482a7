#include "batcher/step_policy.h"

#include <algorithm>
#include <numeric>
#include <optional>

namespace vocoder::batcher {
namespace {

TimePoint Minus(TimePoint t, Duration d) { return t == kNever ? kNever : t - d; }
TimePoint Plus(TimePoint t, Duration d) { return kNever - t < d ? kNever : t + d; }

double Waste(int64_t rows, int64_t longest, int64_t real) {
  const int64_t padded = rows * longest;
  return padded <= 0 ? 0.0 : 1.0 - static_cast<double>(real) / static_cast<double>(padded);
}

// A candidate's time from admission to its audio: the encoder call it is
// admitted in, its own n steps at `step` each, its HiFT.
Duration Solve(const StepCandidate& c, Duration encoder, Duration step,
               const StageCostModel& cost) {
  return encoder + c.n_timesteps * step + cost.Hift(1, c.cost);
}

// Rule 1: when an empty running set starts, as Decide's triggers. nullopt
// means wait until *wait_until.
std::optional<Trigger> StartTrigger(const StepView& view, const std::vector<int>& order,
                                    TimePoint now, const BatcherOptions& o,
                                    const StageCostModel& cost, TimePoint* wait_until) {
  if (view.draining) return Trigger::kDrain;
  int64_t longest = 0;
  int64_t real = 0;
  TimePoint oldest = kNever;
  for (const StepCandidate& c : view.queued) {
    longest = std::max(longest, c.cost);
    real += c.cost;
    oldest = std::min(oldest, c.enqueued);
  }
  const int cap = cost.BestRows(longest, o.max_batch_size);
  const int n = static_cast<int>(view.queued.size());
  const int rows = std::min(n, cap);
  double fill = static_cast<double>(n) / cap;
  if (o.max_batch_tokens > 0) {
    fill = std::max(fill, static_cast<double>(real) / static_cast<double>(o.max_batch_tokens));
  }
  // Deadline: the latest start that still finishes each of the first `rows`
  // candidates (in admission order) in time.
  TimePoint latest_start = kNever;
  const Duration encoder = cost.Encoder(rows, longest);
  const Duration step = cost.Step(rows, longest);
  for (int i = 0; i < rows; ++i) {
    const StepCandidate& c = view.queued[order[i]];
    latest_start = std::min(latest_start, Minus(c.deadline, Solve(c, encoder, step, cost)));
  }
  const TimePoint max_wait_at = Plus(oldest, o.max_wait);
  const TimePoint idle_at = Plus(view.last_arrival, o.idle_grace);
  const bool all_ready = view.active_streams > 0 && n >= view.active_streams;
  if (fill >= 1.0) return Trigger::kFull;
  if (fill >= o.early_fire_fraction) return Trigger::kNearFull;
  if (all_ready) return Trigger::kAllReady;
  if (now >= latest_start) return Trigger::kDeadline;
  if (now >= max_wait_at) return Trigger::kMaxWait;
  if (now >= idle_at) return Trigger::kIdle;
  *wait_until = std::min({latest_start, max_wait_at, idle_at});
  return std::nullopt;
}

// Rule 4: whether the admitted candidates (`admit`, indices into
// view.queued) join now, the set then having `rows` rows of padded length
// `longest`.
bool JoinNow(const StepView& view, const std::vector<int>& admit, TimePoint now, int rows,
             int64_t longest, int64_t admitted_longest, Duration step_now, const BatcherOptions& o,
             const StageCostModel& cost) {
  const Duration overhead = cost.JoinOverhead();
  if (o.join_amortization <= 0 || overhead <= Duration::zero()) return true;
  const auto n = static_cast<int>(admit.size());
  const Duration encoder = cost.Encoder(n, admitted_longest);
  const Duration step = cost.Step(rows, longest);
  Duration waited = Duration::zero();
  for (int i : admit) {
    const StepCandidate& c = view.queued[i];
    if (c.deadline != kNever) {
      if (Plus(now, step_now + Solve(c, encoder, step, cost)) > c.deadline) return true;
    }
    waited += now - std::min(now, std::max(c.enqueued, view.last_join));
  }
  const double owed = o.join_amortization * rows * std::chrono::duration<double>(overhead).count();
  const double left = owed - std::chrono::duration<double>(waited).count();
  if (left <= 0) return true;
  return view.arrival_rate_hz * left / n < 1.0;
}

}  // namespace

const char* StepReasonName(StepReason reason) {
  switch (reason) {
    case StepReason::kStart:
      return "start";
    case StepReason::kJoin:
      return "join";
    case StepReason::kStep:
      return "step";
    case StepReason::kCap:
      return "cap";
    case StepReason::kFull:
      return "full";
    case StepReason::kPadding:
      return "padding";
    case StepReason::kDeadline:
      return "deadline";
    case StepReason::kAlone:
      return "alone";
    case StepReason::kGather:
      return "gather";
    case StepReason::kWait:
      return "wait";
  }
  return "unknown";
}

StepDecision DecideStep(const StepView& view, TimePoint now, const BatcherOptions& o,
                        const StageCostModel& cost) {
  std::vector<int> order(view.queued.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const StepCandidate& ca = view.queued[a];
    const StepCandidate& cb = view.queued[b];
    if (ca.deadline != cb.deadline) return ca.deadline < cb.deadline;
    return ca.enqueued < cb.enqueued;
  });

  StepDecision d;
  const int running = static_cast<int>(view.running.size());
  int64_t run_longest = 0;
  int64_t run_real = 0;
  for (const RunningRow& r : view.running) {
    run_longest = std::max(run_longest, r.cost);
    run_real += r.cost;
  }
  d.cap = cost.BestRows(run_longest, o.max_batch_size);

  if (running == 0) {
    if (view.queued.empty()) {
      d.wait = true;
      return d;
    }
    TimePoint wait_until = kNever;
    const std::optional<Trigger> trigger = StartTrigger(view, order, now, o, cost, &wait_until);
    if (!trigger) {
      d.wait = true;
      d.wait_until = wait_until;
      return d;
    }
    d.trigger = *trigger;
  } else {
    d.trigger = view.draining ? Trigger::kDrain : Trigger::kJoin;
  }

  // Rule 3: greedy admission in deadline order.
  const Duration step_now = running > 0 ? cost.Step(running, run_longest) : Duration::zero();
  const double waste_now = Waste(running, run_longest, run_real);
  int rows = running;
  int64_t longest = run_longest;
  int64_t real = run_real;
  int64_t admitted_longest = 0;
  std::optional<StepReason> first_block;
  auto block = [&](StepReason r) {
    if (!first_block) first_block = r;
  };
  for (int index : order) {
    const StepCandidate& c = view.queued[index];
    const bool first_row = rows == 0;
    if (c.alone) {
      if (!first_row) {
        block(StepReason::kAlone);
        continue;
      }
      d.admit.push_back(index);
      break;  // the only admitted job
    }
    const int rows2 = rows + 1;
    const int64_t longest2 = std::max(longest, c.cost);
    const int64_t real2 = real + c.cost;
    if (rows2 > o.max_batch_size) {
      block(StepReason::kFull);
      break;  // no later candidate fits either
    }
    if (!first_row && o.max_batch_tokens > 0 && rows2 * longest2 > o.max_batch_tokens) {
      block(StepReason::kFull);
      continue;  // a shorter one may fit
    }
    const int cap = cost.BestRows(longest2, o.max_batch_size);
    if (rows2 > cap) {
      block(StepReason::kCap);
      continue;  // a shorter one may have a larger cap
    }
    const double waste2 = Waste(rows2, longest2, real2);
    if (waste2 > std::max(o.max_padding_waste, waste_now) && now < Plus(c.enqueued, o.max_wait)) {
      block(StepReason::kPadding);
      continue;
    }
    if (running > 0) {
      const int admitted2 = static_cast<int>(d.admit.size()) + 1;
      const Duration encoder = cost.Encoder(admitted2, std::max(admitted_longest, c.cost));
      const Duration step2 = cost.Step(rows2, longest2);
      bool late = false;
      for (const RunningRow& r : view.running) {
        if (r.deadline == kNever) continue;
        const Duration hift = cost.Hift(1, r.cost);
        const bool in_time = now + r.steps_left * step_now + hift <= r.deadline;
        const bool in_time2 = now + encoder + r.steps_left * step2 + hift <= r.deadline;
        if (in_time && !in_time2) {
          late = true;
          break;
        }
      }
      if (late) {
        block(StepReason::kDeadline);
        continue;
      }
    }
    d.admit.push_back(index);
    rows = rows2;
    longest = longest2;
    real = real2;
    admitted_longest = std::max(admitted_longest, c.cost);
    d.cap = cap;
  }

  if (running > 0 && !d.admit.empty() && !view.draining &&
      !JoinNow(view, d.admit, now, rows, longest, admitted_longest, step_now, o, cost)) {
    d.admit.clear();
    d.cap = cost.BestRows(run_longest, o.max_batch_size);
    d.reason = StepReason::kGather;
    return d;
  }
  if (!d.admit.empty()) {
    d.reason = running == 0 ? StepReason::kStart : StepReason::kJoin;
  } else if (first_block) {
    d.reason = *first_block;
  } else {
    d.reason = StepReason::kStep;
  }
  return d;
}

}  // namespace vocoder::batcher

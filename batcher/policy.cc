#include "batcher/policy.h"

#include <algorithm>
#include <numeric>

namespace vocoder::batcher {
namespace {

double Waste(int64_t padded, int64_t real) {
  return padded <= 0 ? 0.0 : 1.0 - static_cast<double>(real) / static_cast<double>(padded);
}

TimePoint EarliestDeadline(const GroupView& g) {
  TimePoint t = kNever;
  for (const auto& j : g.jobs) t = std::min(t, j.deadline);
  return t;
}

TimePoint Oldest(const GroupView& g) {
  TimePoint t = kNever;
  for (const auto& j : g.jobs) t = std::min(t, j.enqueued);
  return t;
}

// "No deadline" stays "no deadline"; real times are far from the limits.
TimePoint Minus(TimePoint t, Duration d) { return t == kNever ? kNever : t - d; }

TimePoint Plus(TimePoint t, Duration d) { return kNever - t < d ? kNever : t + d; }

}  // namespace

const char* TriggerName(Trigger trigger) {
  switch (trigger) {
    case Trigger::kFull:
      return "full";
    case Trigger::kNearFull:
      return "near_full";
    case Trigger::kAllReady:
      return "all_ready";
    case Trigger::kIdle:
      return "idle";
    case Trigger::kMaxWait:
      return "max_wait";
    case Trigger::kDeadline:
      return "deadline";
    case Trigger::kDrain:
      return "drain";
    case Trigger::kJoin:
      return "join";
  }
  return "unknown";
}

std::vector<PlannedBatch> PlanGroup(const GroupView& group, int group_index,
                                    const BatcherOptions& options) {
  std::vector<int> order(group.jobs.size());
  std::iota(order.begin(), order.end(), 0);
  // Longest first, so each batch's first job sets its padded length; ties by
  // arrival keep the plan deterministic.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const auto& ja = group.jobs[a];
    const auto& jb = group.jobs[b];
    if (ja.cost != jb.cost) return ja.cost > jb.cost;
    return ja.enqueued < jb.enqueued;
  });
  std::vector<PlannedBatch> out;
  int64_t longest = 0;
  for (int index : order) {
    const int64_t cost = group.jobs[index].cost;
    if (!out.empty()) {
      PlannedBatch& b = out.back();
      const int64_t rows = static_cast<int64_t>(b.jobs.size()) + 1;
      const int64_t padded = rows * longest;
      const int64_t real = b.real_tokens + cost;
      const bool fits = rows <= options.max_batch_size &&
                        (options.max_batch_tokens == 0 || padded <= options.max_batch_tokens) &&
                        Waste(padded, real) <= options.max_padding_waste;
      if (fits) {
        b.jobs.push_back(index);
        b.padded_tokens = padded;
        b.real_tokens = real;
        continue;
      }
    }
    longest = cost;
    out.push_back(PlannedBatch{group_index, {index}, cost, cost});
  }
  return out;
}

Decision Decide(const QueueView& view, TimePoint now, const BatcherOptions& options,
                const CostModel& cost) {
  // Groups in the order they would run: earliest deadline, then oldest job.
  std::vector<int> group_order(view.groups.size());
  std::iota(group_order.begin(), group_order.end(), 0);
  std::stable_sort(group_order.begin(), group_order.end(), [&](int a, int b) {
    const TimePoint da = EarliestDeadline(view.groups[a]);
    const TimePoint db = EarliestDeadline(view.groups[b]);
    if (da != db) return da < db;
    return Oldest(view.groups[a]) < Oldest(view.groups[b]);
  });

  Decision d;
  bool full = false;
  bool near_full = false;
  size_t total_jobs = 0;
  TimePoint oldest = kNever;
  TimePoint latest_start = kNever;  // when the deadline trigger fires
  Duration finish{};                // cumulative predicted run time of the plan
  for (int gi : group_order) {
    const GroupView& g = view.groups[gi];
    total_jobs += g.jobs.size();
    oldest = std::min(oldest, Oldest(g));
    int64_t longest = 0;
    for (const auto& j : g.jobs) longest = std::max(longest, j.cost);
    const int64_t rows = static_cast<int64_t>(g.jobs.size());
    const int64_t padded = rows * longest;
    double fill = static_cast<double>(rows) / options.max_batch_size;
    if (options.max_batch_tokens > 0) {
      fill = std::max(fill, static_cast<double>(padded) / options.max_batch_tokens);
    }
    full = full || fill >= 1.0;
    near_full = near_full || fill >= options.early_fire_fraction;

    for (PlannedBatch& b : PlanGroup(g, gi, options)) {
      finish += cost.Predict(b.padded_tokens);
      for (int j : b.jobs) latest_start = std::min(latest_start, Minus(g.jobs[j].deadline, finish));
      d.batches.push_back(std::move(b));
    }
  }

  const TimePoint max_wait_at = Plus(oldest, options.max_wait);
  const TimePoint idle_at = Plus(view.last_arrival, options.idle_grace);
  const bool all_ready =
      view.active_streams > 0 && total_jobs >= static_cast<size_t>(view.active_streams);

  d.run = true;
  if (full) {
    d.trigger = Trigger::kFull;
  } else if (near_full) {
    d.trigger = Trigger::kNearFull;
  } else if (all_ready) {
    d.trigger = Trigger::kAllReady;
  } else if (now >= latest_start) {
    d.trigger = Trigger::kDeadline;
  } else if (now >= max_wait_at) {
    d.trigger = Trigger::kMaxWait;
  } else if (now >= idle_at) {
    d.trigger = Trigger::kIdle;
  } else {
    d.run = false;
    d.batches.clear();
    d.wait_until = std::min({latest_start, max_wait_at, idle_at});
  }
  return d;
}

}  // namespace vocoder::batcher

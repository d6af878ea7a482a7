// The recent arrival rate of jobs, as an exponentially decayed count: each
// arrival adds 1, the count decays with time constant tau, and the rate is
// the count over tau (for steady arrivals at r per second, r once warmed up).
// The step policy reads it to judge whether waiting can gather more joiners
// (step_policy.h, rule 4).
//
// Thread-compatible: the batcher's thread only. No clock: times are passed in.
#ifndef VOCODER_BATCHER_ARRIVAL_RATE_H_
#define VOCODER_BATCHER_ARRIVAL_RATE_H_

#include "batcher/clock.h"

namespace vocoder::batcher {

class ArrivalRate {
 public:
  explicit ArrivalRate(Duration tau = std::chrono::seconds(1)) : tau_(tau) {}

  // An arrival at `t` (times need not be ordered: a late one decays from the
  // latest seen).
  void Arrive(TimePoint t);
  // Jobs per second at `now` (0 before any arrival).
  double PerSecond(TimePoint now) const;

 private:
  Duration tau_;
  double count_ = 0;  // decayed count at last_
  TimePoint last_{};
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_ARRIVAL_RATE_H_

#include "batcher/arrival_rate.h"

#include <cmath>

namespace vocoder::batcher {
namespace {

double Decay(Duration elapsed, Duration tau) {
  if (elapsed <= Duration::zero()) return 1.0;
  return std::exp(-std::chrono::duration<double>(elapsed).count() /
                  std::chrono::duration<double>(tau).count());
}

}  // namespace

void ArrivalRate::Arrive(TimePoint t) {
  if (count_ == 0 || t > last_) {
    count_ = count_ * Decay(t - last_, tau_) + 1;
    last_ = t;
  } else {
    count_ += Decay(last_ - t, tau_);
  }
}

double ArrivalRate::PerSecond(TimePoint now) const {
  return count_ * Decay(now - last_, tau_) / std::chrono::duration<double>(tau_).count();
}

}  // namespace vocoder::batcher

// What a real-time player hears: playback starts `buffer_s` after the first
// audio arrives and then consumes `sample_rate` samples per second; whenever
// the next audio arrives after the buffered audio has run out, the player
// stalls (an underrun) until it arrives.
//
// Thread-compatible; one per utterance.
#ifndef VOCODER_TOOLS_LOADGEN_PLAYBACK_H_
#define VOCODER_TOOLS_LOADGEN_PLAYBACK_H_

#include <algorithm>
#include <cstdint>

namespace vocoder::loadgen {

class Playback {
 public:
  Playback(double sample_rate, double buffer_s) : rate_(sample_rate), buffer_s_(buffer_s) {}

  // `samples` of audio arrive at time `t` (seconds on any clock; calls in
  // arrival order). Returns the stall this arrival ended, 0 if none.
  double Arrive(double t, uint64_t samples) {
    if (samples == 0) return 0;
    const double length = static_cast<double>(samples) / rate_;
    if (!started_) {
      started_ = true;
      end_ = t + buffer_s_ + length;
      return 0;
    }
    const double stall = std::max(0.0, t - end_);
    stall_s_ += stall;
    end_ = std::max(end_, t) + length;
    return stall;
  }

  double stall_s() const { return stall_s_; }

 private:
  double rate_;
  double buffer_s_;
  bool started_ = false;
  double end_ = 0;  // when the buffered audio runs out
  double stall_s_ = 0;
};

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_PLAYBACK_H_

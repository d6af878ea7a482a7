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

// The part of the stalls the server caused. The player follows the timeline
// a zero-latency server would allow — each chunk's audio available the moment
// the tokens that release it are sent, so pacing and the model's lookahead
// still cause their own pauses — delayed by the first audio's latency plus
// the start-up buffer. Audio arriving later than that timeline is a stall the
// server caused; the player then waits, and the timeline moves with it.
//
// Thread-compatible; one per utterance.
class ServerStall {
 public:
  ServerStall(double sample_rate, double buffer_s) : rate_(sample_rate), buffer_s_(buffer_s) {}

  // A chunk of `samples`, released by tokens sent at `sent`, received at
  // `received` (same clock; calls in order). Returns the stall it caused.
  double Arrive(double sent, double received, uint64_t samples) {
    if (samples == 0) return 0;
    const double length = static_cast<double>(samples) / rate_;
    if (!started_) {
      started_ = true;
      ideal_ = sent;
      delay_ = received + buffer_s_ - sent;
      ideal_end_ = ideal_ + length;
      return 0;
    }
    ideal_ = std::max(ideal_end_, sent);  // when a zero-latency server's player plays it
    ideal_end_ = ideal_ + length;
    const double stall = std::max(0.0, received - (ideal_ + delay_ + stall_s_));
    stall_s_ += stall;
    return stall;
  }

  double stall_s() const { return stall_s_; }

 private:
  double rate_;
  double buffer_s_;
  bool started_ = false;
  double ideal_ = 0, ideal_end_ = 0;  // the ideal timeline: this chunk's start and end
  double delay_ = 0;                  // first audio latency + buffer
  double stall_s_ = 0;
};

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_PLAYBACK_H_

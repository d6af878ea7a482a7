// One utterance's streaming state: turns token chunks into bounded-context
// vocoding jobs and their outputs into gap-free audio. No gRPC, no torch.
//
// Design (docs/streaming.md): each job re-vocodes at most `context_tokens`
// already-vocoded tokens plus the new ones, so cost per chunk does not grow
// with the utterance. The last 3 tokens are held back as the encoder's
// lookahead until more arrive (or, at the end, 3 silence tokens replace
// them). Noise is position-indexed, so overlapping context sees the same
// noise. HiFT gets the previous chunk's last 8 mel frames and their source;
// the audio of those frames, held back last time, is crossfaded with its
// re-vocoded version. The utterance starts with upstream's trim fade.
//
// Thread-compatible: the owning stream serializes calls.
#ifndef VOCODER_SERVER_STREAM_SESSION_H_
#define VOCODER_SERVER_STREAM_SESSION_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/vocoder.h"

namespace vocoder::server {

struct SessionOptions {
  int context_tokens = 25;   // re-vocoded left context per job
  int min_new_tokens = 4;    // a non-final job emits >= 8 frames (the mel cache)
  int max_new_tokens = 50;   // a backlog is vocoded in jobs of at most this many new tokens
  int cache_frames = 8;      // HiFT left context (mel and source)
  int lookahead_tokens = 3;  // encoder pre-lookahead
  // The model's constants (EdgeLimits::Session() fills them from the manifest).
  int frames_per_token = 2;
  int samples_per_frame = 480;
  int mel_bins = 80;
  int64_t silence_token = model::kSilenceToken;
};

class StreamSession {
 public:
  StreamSession(SessionOptions options, std::shared_ptr<const model::Voice> voice,
                std::array<float, 9> hift_phase);

  // Tokens already validated (ids in range, SOS/EOS stripped).
  void Append(const std::vector<int64_t>& tokens);
  // No more tokens will come.
  void EndInput() { input_done_ = true; }

  // The next job, when one is ready and none is in flight.
  std::optional<model::VocodeJob> NextJob();
  // Consumes the in-flight job's outputs; returns the samples to emit now.
  std::vector<float> Complete(const model::VocodeJob& job);
  // When input ended and every token was vocoded: the held-back tail, once.
  // Afterwards finished() is true.
  std::vector<float> Flush();

  bool in_flight() const { return in_flight_; }
  bool input_done() const { return input_done_; }
  bool finished() const { return finished_; }
  int64_t tokens_received() const { return received_; }
  int64_t samples_emitted() const { return emitted_; }
  // Samples per token, the unit clients stitch with.
  int samples_per_token() const { return o_.frames_per_token * o_.samples_per_frame; }

 private:
  int64_t Held() const { return static_cast<int64_t>(tail_.size()); }
  std::vector<float> Emit(std::vector<float> out);

  const SessionOptions o_;
  const std::shared_ptr<const model::Voice> voice_;
  const std::array<float, 9> phase_;
  std::vector<int64_t> window_;  // tokens from absolute index base_ on
  int64_t base_ = 0;
  int64_t received_ = 0;
  int64_t vocoded_ = 0;       // tokens whose frames were vocoded
  int64_t next_vocoded_ = 0;  // vocoded_ once the in-flight job completes
  bool input_done_ = false;
  bool in_flight_ = false;
  bool final_job_ = false;
  bool finished_ = false;
  bool first_audio_ = true;
  int64_t emitted_ = 0;
  std::vector<float> mel_cache_;     // cache_frames x mel_bins
  std::vector<float> source_cache_;  // cache_frames x 480
  std::vector<float> tail_;          // held-back audio of the last cache_frames
};

// Upstream's start-of-utterance fade (trim_fade): 20 ms of silence, then a
// 20 ms raised-cosine fade-in. Applied in place to the first samples.
void ApplyTrimFade(std::vector<float>& audio, int sample_rate = 24000);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_STREAM_SESSION_H_

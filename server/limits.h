// The edge's limits and the model's constants, in one place: what the
// manifest says about the model (mel bins, frames per token, samples per
// frame, vocabulary, row length, default steps) and what the configuration
// allows (chunk and utterance sizes, message size, stream idle timeout).
// Request validation, the stream session and the reactors read them from
// here instead of literals.
//
// Thread-safety: a value; immutable once built.
#ifndef VOCODER_SERVER_LIMITS_H_
#define VOCODER_SERVER_LIMITS_H_

#include <cstdint>
#include <string>

#include "batcher/clock.h"
#include "config/config.h"
#include "model/manifest.h"
#include "server/stream_session.h"

namespace vocoder::server {

// The most Euler steps a request may ask for. Standard: 50 (10 is the
// default). Turbo: 4. Its meanflow decoder was distilled for 2 steps (1 is
// the meanflow one-step case); 10, the standard model's count, is refused
// rather than run at five times the cost, so a client written for the
// standard model learns it reached a Turbo server (docs/model-format.md).
inline constexpr int kMaxTimesteps = 50;
inline constexpr int kMaxTurboTimesteps = 4;

struct EdgeLimits {
  // From the manifest.
  int sample_rate = 24000;
  int samples_per_frame = 480;
  int frames_per_token = 2;
  int mel_bins = 80;
  int token_vocab = 6561;
  int max_row_tokens = 2500;
  int default_timesteps = 10;
  // The Euler solver's step range a client may ask for (config.n_timesteps):
  // 1..kMaxTimesteps for the standard model, 1..kMaxTurboTimesteps for turbo.
  int max_timesteps = 50;
  std::string variant = model::kVariantStandard;  // the served model variant

  // From the configuration.
  int max_tokens_per_chunk = 500;
  int max_tokens_per_utterance = 7500;
  int64_t max_message_bytes = 4 << 20;
  // A stream that sent no message for this long while its input is still
  // open is finished with DEADLINE_EXCEEDED (0: never).
  batcher::Duration stream_idle_timeout = std::chrono::seconds(30);
  // Audio responses a stream may have queued or in flight before it stops
  // submitting jobs (backpressure); resumed when a write completes.
  int max_queued_audio = 2;

  int samples_per_token() const { return samples_per_frame * frames_per_token; }
  // The session options matching the model.
  SessionOptions Session() const;

  static EdgeLimits From(const model::Manifest& manifest, const config::Config& config);
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_LIMITS_H_

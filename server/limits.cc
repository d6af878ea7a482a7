#include "server/limits.h"

namespace vocoder::server {

SessionOptions EdgeLimits::Session() const {
  SessionOptions o;
  o.frames_per_token = frames_per_token;
  o.samples_per_frame = samples_per_frame;
  o.mel_bins = mel_bins;
  return o;
}

EdgeLimits EdgeLimits::From(const model::Manifest& m, const config::Config& c) {
  EdgeLimits l;
  l.sample_rate = m.sample_rate;
  l.samples_per_frame = m.samples_per_frame;
  l.frames_per_token = m.frames_per_token;
  l.mel_bins = m.mel_bins;
  l.token_vocab = m.token_vocab;
  l.max_row_tokens = m.max_row_tokens;
  l.default_timesteps = m.n_timesteps;
  l.variant = m.variant;
  l.max_timesteps = m.variant == model::kVariantTurbo ? kMaxTurboTimesteps : kMaxTimesteps;
  l.max_tokens_per_chunk = c.max_tokens_per_chunk;
  l.max_tokens_per_utterance = c.max_tokens_per_utterance;
  l.max_message_bytes = c.max_message_bytes;
  l.stream_idle_timeout = std::chrono::duration_cast<batcher::Duration>(
      std::chrono::duration<double>(c.stream_idle_timeout_s));
  return l;
}

}  // namespace vocoder::server

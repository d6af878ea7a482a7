#include "server/stream_session.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace vocoder::server {

void ApplyTrimFade(std::vector<float>& audio, int sample_rate) {
  const size_t n = static_cast<size_t>(sample_rate / 50);
  for (size_t i = 0; i < std::min(n, audio.size()); ++i) audio[i] = 0.0f;
  for (size_t i = 0; i < n && n + i < audio.size(); ++i) {
    // (cos(linspace(pi, 0, n)) + 1) / 2, as upstream.
    const double x = M_PI - M_PI * static_cast<double>(i) / static_cast<double>(n - 1);
    audio[n + i] *= static_cast<float>((std::cos(x) + 1.0) / 2.0);
  }
}

StreamSession::StreamSession(SessionOptions options, std::shared_ptr<const model::Voice> voice,
                             std::array<float, 9> hift_phase)
    : o_(options), voice_(std::move(voice)), phase_(hift_phase) {}

void StreamSession::Append(const std::vector<int64_t>& tokens) {
  window_.insert(window_.end(), tokens.begin(), tokens.end());
  received_ += static_cast<int64_t>(tokens.size());
}

std::optional<model::VocodeJob> StreamSession::NextJob() {
  if (in_flight_ || finished_) return std::nullopt;
  const int64_t pending = received_ - vocoded_;
  if (pending == 0) return std::nullopt;  // only the tail may be left: Flush()
  const int64_t look = o_.lookahead_tokens;
  // The last job takes everything left, with silence as its lookahead; any
  // other job takes at most max_new_tokens and real tokens as lookahead, so
  // a backlog never makes one job (and its latency) grow without bound.
  const bool last = input_done_ && pending <= o_.max_new_tokens + look + o_.min_new_tokens;
  int64_t take = pending;
  if (!last) {
    if (pending - look < o_.min_new_tokens) return std::nullopt;
    take = std::min<int64_t>(pending - look, o_.max_new_tokens);
  }
  const int64_t end = vocoded_ + take + (last ? 0 : look);  // tokens [.., end) go into the job
  next_vocoded_ = vocoded_ + take;
  const int64_t context = std::min<int64_t>(o_.context_tokens, vocoded_);
  const int64_t start = vocoded_ - context;
  // Keep the window bounded: nothing before `start` is needed again.
  window_.erase(window_.begin(), window_.begin() + (start - base_));
  base_ = start;

  model::VocodeJob job;
  job.voice = voice_;
  job.tokens.assign(window_.begin(), window_.begin() + (end - base_));
  if (last) {
    // Silence feeds the lookahead of the last real tokens (as Chatterbox
    // Turbo does); finalize=false then drops exactly the silence's frames.
    job.tokens.insert(job.tokens.end(), look, o_.silence_token);
  }
  job.finalize = false;
  job.context_tokens = static_cast<int>(context);
  job.noise_offset = o_.frames_per_token * start;
  job.hift_phase = phase_;
  job.mel_cache = mel_cache_;
  job.source_cache = source_cache_;
  in_flight_ = true;
  final_job_ = last;
  return job;
}

std::vector<float> StreamSession::Emit(std::vector<float> out) {
  if (first_audio_ && !out.empty()) {
    ApplyTrimFade(out);
    first_audio_ = false;
  }
  emitted_ += static_cast<int64_t>(out.size());
  return out;
}

std::vector<float> StreamSession::Complete(const model::VocodeJob& job) {
  assert(in_flight_);
  in_flight_ = false;
  vocoded_ = next_vocoded_;
  const auto bins = static_cast<size_t>(o_.mel_bins);
  const size_t cache = mel_cache_.size() / bins * static_cast<size_t>(o_.samples_per_frame);
  std::vector<float> out = job.audio;
  // Crossfade the re-vocoded cache frames with the audio held back for them:
  // complementary raised-cosine gains, so a steady signal keeps its level.
  for (size_t i = 0; i < cache && i < out.size() && i < tail_.size(); ++i) {
    const double fade_in =
        0.5 - 0.5 * std::cos(M_PI * (static_cast<double>(i) + 0.5) / static_cast<double>(cache));
    out[i] = static_cast<float>(fade_in * out[i] + (1.0 - fade_in) * tail_[i]);
  }
  tail_.clear();
  // Caches for the next job: the last cache_frames frames and their source.
  const size_t frames = job.mel.size() / bins;
  const size_t keep = std::min<size_t>(static_cast<size_t>(o_.cache_frames), frames);
  mel_cache_.assign(job.mel.end() - static_cast<std::ptrdiff_t>(keep * bins), job.mel.end());
  const size_t keep_samples = keep * static_cast<size_t>(o_.samples_per_frame);
  source_cache_.assign(job.source.end() - static_cast<std::ptrdiff_t>(keep_samples),
                       job.source.end());
  if (final_job_) {
    finished_ = true;
    mel_cache_.clear();
    source_cache_.clear();
    return Emit(std::move(out));
  }
  // Hold back the audio of the cached frames: the next job re-vocodes them
  // with more right context.
  const size_t hold = std::min(keep_samples, out.size());
  tail_.assign(out.end() - static_cast<std::ptrdiff_t>(hold), out.end());
  out.resize(out.size() - hold);
  return Emit(std::move(out));
}

std::vector<float> StreamSession::Flush() {
  if (finished_ || in_flight_ || !input_done_ || received_ != vocoded_) return {};
  finished_ = true;
  std::vector<float> out = std::move(tail_);
  tail_.clear();
  return Emit(std::move(out));
}

}  // namespace vocoder::server

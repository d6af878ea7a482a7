#include "model/sim_vocoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"

namespace vocoder::model {
namespace {

using std::chrono::nanoseconds;

class RealClock final : public SimClock {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  void SleepUntil(TimePoint t) override { std::this_thread::sleep_until(t); }
};

nanoseconds FromMs(double ms) { return nanoseconds(static_cast<int64_t>(std::llround(ms * 1e6))); }

class SimFlowBatch final : public FlowBatch {
 public:
  int rows() const override { return static_cast<int>(P.size()); }
  std::vector<int> steps_taken() const override { return steps; }
  int n_timesteps() const override { return n; }

  int n = 10;
  int64_t tmax = 0;
  std::vector<int64_t> P, T, emit_begin;  // per row, as the LibTorch runner's
  std::vector<int> steps;
};

}  // namespace

SimClock& RealSimClock() {
  static RealClock clock;
  return clock;
}

int SimTonePeriod(const VoiceData& voice) {
  // FNV-1a over the conditioning's bytes: equal voices, equal tones.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  mix(voice.embedding.data(), voice.embedding.size() * sizeof(float));
  mix(voice.prompt_tokens.data(), voice.prompt_tokens.size() * sizeof(int64_t));
  return 40 + static_cast<int>(h % 200);
}

float SimToneSample(int period, int64_t sample) {
  int64_t k = sample % period;
  if (k < 0) k += period;
  return static_cast<float>(0.5 * std::sin(2.0 * M_PI * static_cast<double>(k) / period));
}

SimVocoder::SimVocoder(Manifest manifest, SimProfile profile, SimClock* clock)
    : m_(std::move(manifest)),
      profile_(std::move(profile)),
      clock_(clock != nullptr ? *clock : RealSimClock()) {}

nanoseconds SimVocoder::PredictEncode(int64_t rows, int64_t padded_tokens) const {
  return FromMs(profile_.encoder.PredictMs(rows, padded_tokens));
}
nanoseconds SimVocoder::PredictStep(int64_t rows, int64_t padded_frames) const {
  return FromMs(profile_.estimator.PredictMs(2 * rows, padded_frames));
}
nanoseconds SimVocoder::PredictHift(int64_t rows, int64_t frames) const {
  return FromMs(profile_.hift.PredictMs(rows, frames));
}
nanoseconds SimVocoder::PredictRun(int64_t rows, int64_t row_tokens, int64_t hift_frames,
                                   int n_timesteps) const {
  const int64_t frames = m_.frames_per_token * row_tokens - m_.lookahead_frames;
  return PredictEncode(rows, row_tokens) + n_timesteps * PredictStep(rows, frames) +
         PredictHift(rows, hift_frames) + FromMs(profile_.run_overhead_ms);
}

void SimVocoder::Spend(SimClock::TimePoint start, nanoseconds predicted) {
  clock_.SleepUntil(start + predicted);
  busy_ns_.fetch_add(predicted.count(), std::memory_order_relaxed);
}

absl::StatusOr<std::shared_ptr<const Voice>> SimVocoder::PrepareVoice(VoiceData data) {
  if (auto s = ValidateVoice(data, m_); !s.ok()) return s;
  auto voice = std::make_shared<Voice>();
  voice->data = std::move(data);
  voice->prepared_by = this;
  return std::shared_ptr<const Voice>(std::move(voice));
}

absl::Status SimVocoder::Run(absl::Span<VocodeJob* const> jobs, int n_timesteps) {
  auto batch = Encode(jobs, n_timesteps);
  if (!batch.ok()) return batch.status();
  while (!(*batch)->done()) {
    if (auto s = Step(**batch); !s.ok()) return s;
  }
  return Vocode(**batch, jobs);
}

absl::StatusOr<std::unique_ptr<FlowBatch>> SimVocoder::Encode(absl::Span<VocodeJob* const> jobs,
                                                              int n_timesteps) {
  if (auto s = PrepareBatch(jobs, n_timesteps, m_, *this); !s.ok()) return s;
  const auto start = clock_.Now();
  auto b = std::make_unique<SimFlowBatch>();
  b->n = n_timesteps;
  const int64_t fpt = m_.frames_per_token;
  int64_t lmax = 0;
  for (const VocodeJob* j : jobs) {
    const int64_t p = j->voice->prompt_tokens();
    const int64_t nt = static_cast<int64_t>(j->tokens.size());
    const int64_t t = fpt * (p + nt) - (j->finalize ? 0 : m_.lookahead_frames);
    b->P.push_back(p);
    b->T.push_back(t);
    b->emit_begin.push_back(fpt * (p + j->context_tokens));
    lmax = std::max(lmax, p + nt);
    b->tmax = std::max(b->tmax, t);
  }
  b->steps.assign(jobs.size(), 0);
  Spend(start, PredictEncode(static_cast<int64_t>(jobs.size()), lmax));
  return std::unique_ptr<FlowBatch>(std::move(b));
}

absl::Status SimVocoder::Step(FlowBatch& base) {
  auto& b = static_cast<SimFlowBatch&>(base);
  bool any = false;
  for (int& s : b.steps) {
    if (s < b.n) {
      ++s;
      any = true;
    }
  }
  // Finished rows ride along (dt = 0), as in the LibTorch runner.
  if (any) Spend(clock_.Now(), PredictStep(b.rows(), b.tmax));
  return absl::OkStatus();
}

absl::Status SimVocoder::Vocode(FlowBatch& base, absl::Span<VocodeJob* const> jobs) {
  auto& b = static_cast<SimFlowBatch&>(base);
  if (auto s = CheckVocodeBatch(b, jobs.size()); !s.ok()) return s;
  const auto start = clock_.Now();
  const int64_t spf = m_.samples_per_frame;
  const int64_t fpt = m_.frames_per_token;
  const int bins = m_.mel_bins;
  std::map<int64_t, int64_t> rows_by_len;  // HiFT runs rows of equal length together
  for (int64_t i = 0; i < b.rows(); ++i) {
    VocodeJob& j = *jobs[static_cast<size_t>(i)];
    const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / bins;
    const int64_t f = b.T[i] - b.emit_begin[i];
    // Emitted mel: a deterministic function of each frame's token.
    j.mel.resize(static_cast<size_t>(f * bins));
    for (int64_t e = 0; e < f; ++e) {
      const int64_t token_index = (b.emit_begin[i] + e) / fpt - b.P[i];
      const float level =
          -8.0f + static_cast<float>(j.tokens[static_cast<size_t>(token_index)] % 97) / 16.0f;
      std::fill_n(j.mel.begin() + e * bins, bins, level);
    }
    // Audio: the voice's tone at the absolute sample positions these frames
    // cover (the first is the first cached frame), as HiFT's noise is indexed.
    const int period = SimTonePeriod(j.voice->data);
    std::vector<float> table(static_cast<size_t>(period));
    for (int s = 0; s < period; ++s) table[static_cast<size_t>(s)] = SimToneSample(period, s);
    const int64_t first_frame = j.noise_offset + fpt * j.context_tokens - k;
    const int64_t samples = spf * (k + f);
    int64_t phase = (spf * first_frame) % period;
    if (phase < 0) phase += period;
    j.audio.resize(static_cast<size_t>(samples));
    j.source.resize(static_cast<size_t>(samples));
    for (int64_t s = 0; s < samples; ++s) {
      const float v = table[static_cast<size_t>(phase)];
      j.audio[static_cast<size_t>(s)] = v;
      j.source[static_cast<size_t>(s)] = 0.2f * v;
      if (++phase == period) phase = 0;
    }
    std::copy(j.source_cache.begin(), j.source_cache.end(), j.source.begin());
    ++rows_by_len[k + f];
  }
  nanoseconds predicted = FromMs(profile_.run_overhead_ms);
  for (const auto& [frames, rows] : rows_by_len) predicted += PredictHift(rows, frames);
  Spend(start, predicted);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vocoder>> LoadSimVocoder(const std::string& model_dir,
                                                        const std::string& device,
                                                        const LoadOptions& options) {
  auto profile = LoadSimProfile(device);
  if (!profile.ok()) return profile.status();
  auto manifest = LoadManifest(model_dir, options.verify_hashes, /*require_weights=*/false);
  if (!manifest.ok()) return manifest.status();
  return std::unique_ptr<Vocoder>(
      std::make_unique<SimVocoder>(*std::move(manifest), *std::move(profile)));
}

}  // namespace vocoder::model

#include "model/sim_vocoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "model/flow_rows.h"

namespace vocoder::model {
namespace {

using std::chrono::nanoseconds;

class RealClock final : public SimClock {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  void SleepUntil(TimePoint t) override { std::this_thread::sleep_until(t); }
};

nanoseconds FromMs(double ms) { return nanoseconds(static_cast<int64_t>(std::llround(ms * 1e6))); }

// The simulator's running set: the shared row bookkeeping, no device state.
class SimFlowBatch final : public FlowRows {
 public:
  using FlowRows::FlowRows;
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
      clock_(clock != nullptr ? *clock : RealSimClock()) {
  // Lognormal with mean 1 and coefficient of variation cv:
  // sigma^2 = ln(1 + cv^2), mu = -sigma^2 / 2.
  const double var = std::log1p(profile_.jitter_cv * profile_.jitter_cv);
  jitter_ = std::lognormal_distribution<double>(-var / 2, std::sqrt(var));
}

nanoseconds SimVocoder::PredictEncode(int64_t rows, int64_t padded_tokens) const {
  return FromMs(profile_.encoder.PredictMs(rows, padded_tokens));
}
nanoseconds SimVocoder::PredictStep(int64_t rows, int64_t padded_frames) const {
  return FromMs(profile_.estimator.PredictMs(GuidanceCopies(m_) * rows, padded_frames));
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
  if (profile_.jitter_cv > 0) {
    predicted = nanoseconds(std::llround(static_cast<double>(predicted.count()) * jitter_(rng_)));
  }
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

std::unique_ptr<FlowBatch> SimVocoder::NewFlowBatch() {
  return std::make_unique<SimFlowBatch>(this);
}

namespace {
SimFlowBatch* Own(FlowBatch& batch, const Vocoder* runner) {
  auto* b = dynamic_cast<SimFlowBatch*>(&batch);
  return b != nullptr && b->owner() == runner ? b : nullptr;
}
}  // namespace

absl::StatusOr<std::vector<RowId>> SimVocoder::Admit(FlowBatch& base,
                                                     absl::Span<VocodeJob* const> jobs,
                                                     absl::Span<const int> n_timesteps) {
  SimFlowBatch* b = Own(base, this);
  if (b == nullptr) return ForeignBatchError();
  if (auto s = PrepareAdmit(jobs, n_timesteps, m_, *this); !s.ok()) return s;
  const auto start = clock_.Now();
  std::vector<FlowRow> rows;
  int64_t lmax = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const VocodeJob& j = *jobs[i];
    rows.push_back(MakeFlowRow(j, n_timesteps[i], m_));
    lmax = std::max(lmax, j.voice->prompt_tokens() + static_cast<int64_t>(j.tokens.size()));
  }
  Spend(start, PredictEncode(static_cast<int64_t>(jobs.size()), lmax));
  return b->Append(std::move(rows));
}

absl::Status SimVocoder::Step(FlowBatch& base) {
  SimFlowBatch* b = Own(base, this);
  if (b == nullptr) return ForeignBatchError();
  int64_t pending = 0;
  for (FlowRow& r : b->list()) {
    if (!r.done()) {
      ++r.steps;
      ++pending;
    }
  }
  // Only the pending rows run, at the set's padded length.
  if (pending > 0) Spend(clock_.Now(), PredictStep(pending, b->padded_frames()));
  return absl::OkStatus();
}

absl::Status SimVocoder::Retire(FlowBatch& base, absl::Span<const RowId> ids,
                                absl::Span<VocodeJob* const> jobs) {
  SimFlowBatch* b = Own(base, this);
  if (b == nullptr) return ForeignBatchError();
  if (auto s = CheckRetire(*b, ids, jobs.size()); !s.ok()) return s;
  if (ids.empty()) return absl::OkStatus();
  const auto start = clock_.Now();
  const int64_t spf = m_.samples_per_frame;
  const int64_t fpt = m_.frames_per_token;
  const int bins = m_.mel_bins;
  std::map<int64_t, int64_t> rows_by_len;  // HiFT runs rows of equal length together
  for (size_t i = 0; i < ids.size(); ++i) {
    const FlowRow& row = b->list()[static_cast<size_t>(b->Find(ids[i]))];
    VocodeJob& j = *jobs[i];
    const int64_t k = static_cast<int64_t>(j.mel_cache.size()) / bins;
    const int64_t f = row.frames - row.emit_begin;
    // Emitted mel: a deterministic function of each frame's token.
    j.mel.resize(static_cast<size_t>(f * bins));
    for (int64_t e = 0; e < f; ++e) {
      const int64_t token_index = (row.emit_begin + e) / fpt - row.prompt_tokens;
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
  b->Remove(ids);
  nanoseconds predicted = FromMs(profile_.run_overhead_ms);
  for (const auto& [frames, rows] : rows_by_len) predicted += PredictHift(rows, frames);
  Spend(start, predicted);
  return absl::OkStatus();
}

absl::Status SimVocoder::Drop(FlowBatch& base, absl::Span<const RowId> ids) {
  SimFlowBatch* b = Own(base, this);
  if (b == nullptr) return ForeignBatchError();
  if (auto s = CheckDrop(*b, ids); !s.ok()) return s;
  b->Remove(ids);
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

// The simulated accelerator (docs/simulator.md): a Vocoder that keeps the
// whole runner contract of the LibTorch runner (the same PrepareJob
// validation and errors, stage API, emitted frames, cache and audio lengths,
// voice preparation) and replaces only the numerics and the device:
// - audio is a per-voice tone whose phase follows the absolute sample
//   position, so stitched chunks of one utterance form one continuous tone;
//   mel frames and HiFT source are deterministic stand-ins of the right size;
// - each stage takes the time a SimProfile predicts for its shape: the calling
//   thread sleeps until the stage's start plus the prediction (host work done
//   meanwhile is absorbed, as a GPU overlaps it), so the simulated GPU costs
//   no host CPU.
// Everything it reports is simulated; vocoderd logs a warning and labels
// /metrics (device "sim") when it runs on one.
//
// No torch here: the simulator needs the model directory's manifest and
// voices, never its weights.
//
// Thread-safety: like every Vocoder, thread-compatible (one thread runs
// batches); PrepareVoice is thread-safe. The clock must outlive the runner.
#ifndef VOCODER_MODEL_SIM_VOCODER_H_
#define VOCODER_MODEL_SIM_VOCODER_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "model/manifest.h"
#include "model/sim_profile.h"
#include "model/vocoder.h"

namespace vocoder::model {

// Time for the simulator, injectable so its tests never sleep.
// Thread-safety: implementations are thread-safe.
class SimClock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~SimClock() = default;
  virtual TimePoint Now() = 0;
  // Blocks until Now() >= t (returns at once when it already is).
  virtual void SleepUntil(TimePoint t) = 0;
};

// The steady clock and std::this_thread::sleep_until (a futex wait, no spin).
SimClock& RealSimClock();

class SimVocoder final : public Vocoder {
 public:
  // `clock` null = RealSimClock().
  SimVocoder(Manifest manifest, SimProfile profile, SimClock* clock = nullptr);

  const Manifest& manifest() const override { return m_; }
  // "sim:<profile name>".
  std::string device() const override { return "sim:" + profile_.name; }
  const SimProfile& profile() const { return profile_; }

  absl::StatusOr<std::shared_ptr<const Voice>> PrepareVoice(VoiceData data) override;
  std::unique_ptr<FlowBatch> NewFlowBatch() override;
  absl::StatusOr<std::vector<RowId>> Admit(FlowBatch& batch, absl::Span<VocodeJob* const> jobs,
                                           absl::Span<const int> n_timesteps) override;
  absl::Status Step(FlowBatch& batch) override;
  absl::Status Retire(FlowBatch& batch, absl::Span<const RowId> rows,
                      absl::Span<VocodeJob* const> jobs) override;
  absl::Status Drop(FlowBatch& batch, absl::Span<const RowId> rows) override;

  // Predicted stage times (what the stages sleep for). Pure. Admit sleeps
  // PredictEncode(new rows, their padded tokens); Step sleeps
  // PredictStep(pending rows, the set's padded frames); Retire sleeps the
  // run overhead plus PredictHift(rows, frames) per group of rows of equal
  // vocoded length; Drop takes no simulated time. Each sleep is the
  // prediction times the profile's jitter factor (1 when jitter_cv is 0).
  std::chrono::nanoseconds PredictEncode(int64_t rows, int64_t padded_tokens) const;
  // `rows` jobs cost GuidanceCopies(manifest) estimator rows each: twice as
  // many for the standard model (CFG by batch doubling), as many for turbo.
  std::chrono::nanoseconds PredictStep(int64_t rows, int64_t padded_frames) const;
  std::chrono::nanoseconds PredictHift(int64_t rows, int64_t frames) const;
  // A whole Run of `rows` equal streaming jobs: encoder, n steps, HiFT and the
  // run overhead.
  std::chrono::nanoseconds PredictRun(int64_t rows, int64_t row_tokens, int64_t hift_frames,
                                      int n_timesteps) const;

  // Sum of the simulated time of every stage run so far. Thread-safe.
  std::chrono::nanoseconds simulated_busy() const {
    return std::chrono::nanoseconds(busy_ns_.load(std::memory_order_relaxed));
  }

 private:
  // Sleeps until `start` + `predicted` x the jitter factor and counts that
  // as busy.
  void Spend(SimClock::TimePoint start, std::chrono::nanoseconds predicted);

  const Manifest m_;
  const SimProfile profile_;
  SimClock& clock_;
  std::atomic<int64_t> busy_ns_{0};
  // Jitter (SimProfile::jitter_cv); stage calls come from one thread at a
  // time (the Vocoder is thread-compatible).
  std::mt19937_64 rng_{0x5eed};
  std::lognormal_distribution<double> jitter_;
};

// The period in samples of a voice's simulated tone (40..239 samples, i.e.
// about 100..600 Hz at 24 kHz), a function of the voice's content.
int SimTonePeriod(const VoiceData& voice);
// The simulated audio sample at absolute sample position `sample` of an
// utterance in a voice with tone period `period`.
float SimToneSample(int period, int64_t sample);

// Loads a simulated device: `device` is "sim", "sim:NAME" or "sim:PATH.json"
// (LoadSimProfile), `model_dir` a model directory whose manifest (geometry,
// limits) and voices are used; its weight files need not exist.
absl::StatusOr<std::unique_ptr<Vocoder>> LoadSimVocoder(const std::string& model_dir,
                                                        const std::string& device,
                                                        const LoadOptions& options = {});

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_SIM_VOCODER_H_

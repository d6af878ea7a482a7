// Cost profiles of the simulated accelerator (docs/simulator.md): how long
// each stage of the S3Gen runner takes for a given batch shape. A profile is
// JSON; two are shipped inside the binary (model/profiles/*.json, embedded at
// build time), so `--device sim:h200-estimate` works from any directory.
//
// No torch, no clock: PredictMs is a pure function of the shape (the
// simulator applies jitter_cv on top).
//
// Thread-safety: SimProfile is a value; all functions are thread-safe.
#ifndef VOCODER_MODEL_SIM_PROFILE_H_
#define VOCODER_MODEL_SIM_PROFILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vocoder::model {

inline constexpr char kSimProfileFormat[] = "vocoderd-sim-profile/1";
inline constexpr char kDefaultSimProfile[] = "h200-estimate";

// One stage's time for `rows` rows of padded length `len` (tokens for the
// encoder, frames for the estimator and HiFT), in milliseconds:
//
//   units = rows * len
//   flops = rows * len * (flop_linear + flop_quadratic * len)
//   eff   = efficiency_max * min(1, units / efficiency_knee_units)   (knee 0: efficiency_max)
//   ms    = max(floor_ms, overhead_ms + ms_per_unit * units + ms_per_unit_sq * rows * len^2
//                         + flops / (peak_tflops * 1e12 * eff) * 1e3)
//
// A fitted profile uses the affine terms (overhead_ms, ms_per_unit,
// ms_per_unit_sq); an estimate from first principles uses the FLOP terms.
// Both may be combined; unset terms are zero.
struct StageCost {
  double floor_ms = 0;
  double overhead_ms = 0;
  double ms_per_unit = 0;
  double ms_per_unit_sq = 0;
  double flop_linear = 0;
  double flop_quadratic = 0;
  double peak_tflops = 0;  // 0: no FLOP term
  double efficiency_max = 1;
  double efficiency_knee_units = 0;

  double PredictMs(int64_t rows, int64_t len) const;
};

struct SimProfile {
  std::string name;
  std::string description;
  bool estimate = false;  // true: not measured (labelled so wherever it is used)
  StageCost encoder;      // rows = jobs, len = padded tokens (prompt + tokens)
  // rows = estimator rows (2 x jobs with CFG, jobs for turbo), len = padded
  // frames; one call = one step.
  StageCost estimator;
  StageCost hift;              // rows = jobs of one length, len = frames (cache + emitted)
  double run_overhead_ms = 0;  // once per batch (host work outside the stages)
  // Run-to-run variation of a stage call's time: each call takes the
  // predicted time times a lognormal factor of mean 1 and this coefficient of
  // variation, from a seeded generator (deterministic per call sequence).
  // A device whose calls never vary keeps paced streams in lock-free phases
  // that a real one breaks (docs/simulator.md); 0 = no variation.
  double jitter_cv = 0;
};

// Parses a profile document; InvalidArgument naming `origin` and the field.
absl::StatusOr<SimProfile> ParseSimProfile(absl::string_view json_text, const std::string& origin);

// The profile a --device value names: "sim" (h200-estimate), "sim:NAME" (a
// shipped profile) or "sim:PATH.json" (a file). NotFound for an unknown name
// or a missing file, InvalidArgument for a malformed one.
absl::StatusOr<SimProfile> LoadSimProfile(absl::string_view device);

// True for "sim" and "sim:..." device names.
bool IsSimDevice(absl::string_view device);

// Names of the profiles compiled into the binary.
std::vector<std::string> ShippedSimProfiles();

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_SIM_PROFILE_H_

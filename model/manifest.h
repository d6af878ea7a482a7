// The exported model directory's manifest.json (docs/model-format.md): what
// the traced files are, which device and dtypes they were traced for, and the
// S3Gen constants the runner needs. No torch here.
//
// Thread-safety: LoadManifest is thread-safe; Manifest is a value.
#ifndef VOCODER_MODEL_MANIFEST_H_
#define VOCODER_MODEL_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vocoder::model {

inline constexpr char kManifestFormat[] = "vocoderd-s3gen/1";
// Upper bounds LoadManifest enforces: SineGen harmonics the runner carries
// phase for, and speech token ids below the SOS/EOS ids (6561, 6562).
inline constexpr int kMaxHarmonics = 9;
inline constexpr int kMaxTokenVocab = 6561;

// Model variants (manifest `variant`; absent means standard):
//   standard: S3Gen's flow decoder, Euler on the cosine schedule with
//             classifier-free guidance by batch doubling (cfg_rate > 0 allowed).
//   turbo:    Chatterbox Turbo's meanflow decoder, Euler on the linear
//             schedule, the estimator takes the end time r per row, no
//             guidance (cfg_rate 0).
inline constexpr char kVariantStandard[] = "standard";
inline constexpr char kVariantTurbo[] = "turbo";

struct Manifest {
  std::string dir;                         // the model directory (absolute or as given)
  std::string size;                        // "tiny" | "full" | ...
  std::string source;                      // "random-init" | "checkpoint"
  std::string device;                      // "cpu" | "cuda": where the modules were traced
  std::string variant = kVariantStandard;  // kVariantStandard | kVariantTurbo
  std::string encoder_dtype = "float32";
  std::string estimator_dtype = "float32";
  std::string hift_dtype = "float32";
  int sample_rate = 24000;
  int samples_per_frame = 480;
  int frames_per_token = 2;
  int token_vocab = 6561;
  int mel_bins = 80;
  int spk_dim = 192;
  int harmonics = 9;
  // Sampler defaults; when absent they default per variant (standard: 10,
  // 0.7, "cosine"; turbo: 2, 0, "linear").
  int n_timesteps = 10;
  double cfg_rate = 0.7;
  std::string t_schedule = "cosine";
  // The traced estimator's inputs, in call order; when absent, the variant's:
  // standard x, mask, mu, t, spks, cond; turbo the same and then r.
  std::vector<std::string> estimator_inputs;
  int lookahead_frames = 6;
  int max_positions = 5000;
  int max_row_tokens = 2500;
  int64_t flow_noise_frames = 15000;
  int64_t hift_noise_samples = 240000;
  std::string torch_version;
  std::vector<std::string> voices;           // relative paths
  std::string golden;                        // relative path of cases.json, "" if none
  std::map<std::string, std::string> files;  // relative path -> sha256 hex

  std::string Path(const std::string& relative) const { return dir + "/" + relative; }
};

// Reads and checks DIR/manifest.json: format, variant and its sampler
// fields (schedule, guidance and estimator inputs must be the variant's),
// constants within the ranges the runner supports, every named path relative
// and inside DIR, required files present (regular files) and, if
// `verify_hashes`, their sha256. Accepts every variant this format defines.
// NotFound when the directory or a file is missing; DataLoss on a hash
// mismatch; InvalidArgument on a malformed or incompatible manifest (an
// unknown variant or schedule included). Messages name the file and what to do.
// `require_weights` false (the simulator): the traced modules and buffers
// (the files LoadVocoder reads weights from) may be absent or unlisted; every
// other listed file is still checked.
absl::StatusOr<Manifest> ReadManifest(const std::string& dir, bool verify_hashes = true,
                                      bool require_weights = true);

// OK when this build's runners serve `m.variant` (standard and turbo: the
// LibTorch runner and the simulator run both); FailedPrecondition for a
// variant the format defines but the runners do not run, with a message that
// says so, so an export is never run as another variant.
absl::Status CheckVariantServed(const Manifest& m);

// Estimator rows per job in one call: 2 with classifier-free guidance by batch
// doubling (standard: a conditional and an unconditional row), 1 without
// (turbo). The LibTorch runner builds its conditioning with this many copies;
// the simulator charges this many rows.
inline int GuidanceCopies(const Manifest& m) { return m.variant == kVariantTurbo ? 1 : 2; }

// ReadManifest, then CheckVariantServed: what a runner (LoadVocoder, the
// simulator) loads a model directory with. Same codes as ReadManifest, plus
// FailedPrecondition for an unserved variant.
absl::StatusOr<Manifest> LoadManifest(const std::string& dir, bool verify_hashes = true,
                                      bool require_weights = true);

// The files of an export that hold weights and noise buffers.
inline constexpr const char* kWeightFiles[] = {"encoder.pt", "estimator.pt", "hift_source.pt",
                                               "hift_decode.pt", "buffers.pt"};

// Lowercase hex sha256 of a file's bytes.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_MANIFEST_H_

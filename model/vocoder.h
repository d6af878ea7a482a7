// The S3Gen model runner's interface: a batch of vocoding jobs in, audio out.
// No torch types here (the implementation, torch_vocoder.cc, keeps them behind
// this interface), so the server and its tests compile without torch headers.
//
// A job is one row: its own speech tokens, its own voice (different voices
// share a batch), its left context, final flag, noise position and HiFT
// caches. One batch shares n_timesteps. The stages (Encode, Step, Vocode) are
// exposed so a scheduler can run single ODE steps with per-row t.
//
// Thread-safety: a Vocoder is thread-compatible: one thread (the batcher's
// GPU thread) runs batches. PrepareVoice is thread-safe.
#ifndef VOCODER_MODEL_VOCODER_H_
#define VOCODER_MODEL_VOCODER_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/manifest.h"

namespace vocoder::model {

inline constexpr int kSosToken = 6561;
inline constexpr int kEosToken = 6562;
inline constexpr int kSilenceToken = 4299;
inline constexpr int kMaxPromptTokens = 250;  // 10 s of reference audio

// A voice's conditioning, as the export tool writes it.
struct VoiceData {
  std::vector<int64_t> prompt_tokens;  // P tokens, 0..6560
  std::vector<float> prompt_feat;      // 2P x 80, time-major log-mel
  std::vector<float> embedding;        // 192-d x-vector
};

// InvalidArgument naming what is wrong (shape, range, non-finite values).
absl::Status ValidateVoice(const VoiceData& voice, const Manifest& manifest);

// A voice ready for the device (tensors uploaded once by PrepareVoice).
struct VoiceTensors;
class Vocoder;
struct Voice {
  VoiceData data;
  std::shared_ptr<const VoiceTensors> tensors;  // owned by the LibTorch runner's device
  const Vocoder* prepared_by = nullptr;         // the runner whose PrepareVoice made it
  int prompt_tokens() const { return static_cast<int>(data.prompt_tokens.size()); }
};

struct VocodeJob {
  // Inputs.
  std::shared_ptr<const Voice> voice;
  std::vector<int64_t> tokens;  // context + new tokens; 6561/6562 are stripped
  int context_tokens = 0;       // leading tokens whose frames are not emitted
  bool finalize = true;         // false: the last 3 tokens are lookahead (6 frames dropped)
  int64_t noise_offset = 0;     // absolute frame of tokens[0] in the utterance
  std::array<float, kMaxHarmonics> hift_phase{};  // SineGen phase per harmonic; [0] must be 0
  std::vector<float> mel_cache;                   // K x 80 frames vocoded before the new ones
  std::vector<float> source_cache;                // overwrites the start of the new source

  // Outputs (set by Run / Vocode).
  std::vector<float> mel;     // F x 80 emitted frames, time-major
  std::vector<float> audio;   // 480 x (K + F) samples, [-0.99, 0.99]
  std::vector<float> source;  // 480 x (K + F) samples of HiFT's excitation

  int emitted_frames() const { return static_cast<int>(mel.size() / 80); }
};

// Strips 6561/6562 from job.tokens and checks everything a row needs: ids
// 0..6560, non-empty, prompt + tokens within the position table, context and
// lookahead leaving at least one emitted frame, caches well-formed.
// InvalidArgument with a message a client can act on.
absl::Status PrepareJob(VocodeJob& job, const Manifest& manifest);

// What Encode checks before any work, shared by every runner: a non-empty
// batch, n_timesteps in 1..100, PrepareJob on each job (errors prefixed with
// "job i: ") and each job's voice prepared by `runner`. InvalidArgument.
absl::Status PrepareBatch(absl::Span<VocodeJob* const> jobs, int n_timesteps,
                          const Manifest& manifest, const Vocoder& runner);

class FlowBatch;
// What Vocode checks: the ODE finished (FailedPrecondition) and one job per
// encoded row (InvalidArgument).
absl::Status CheckVocodeBatch(const FlowBatch& batch, size_t jobs);

// Encoded rows and their ODE state, between Encode and Vocode.
class FlowBatch {
 public:
  virtual ~FlowBatch() = default;
  virtual int rows() const = 0;
  // Steps taken by each row; rows may be at different steps (per-row t).
  virtual std::vector<int> steps_taken() const = 0;
  virtual int n_timesteps() const = 0;
  bool done() const {
    for (int s : steps_taken()) {
      if (s < n_timesteps()) return false;
    }
    return true;
  }
};

class Vocoder {
 public:
  virtual ~Vocoder() = default;
  virtual const Manifest& manifest() const = 0;
  virtual std::string device() const = 0;

  // Validates and uploads a voice. Thread-safe.
  virtual absl::StatusOr<std::shared_ptr<const Voice>> PrepareVoice(VoiceData data) = 0;

  // The whole pipeline for one batch: Encode, n_timesteps Steps, Vocode.
  // Errors: InvalidArgument (a bad job), ResourceExhausted (device out of
  // memory), Internal (model failure). Never throws.
  virtual absl::Status Run(absl::Span<VocodeJob* const> jobs, int n_timesteps) = 0;

  // Stage 1: PrepareJob on every job, encoder once, initial noise.
  virtual absl::StatusOr<std::unique_ptr<FlowBatch>> Encode(absl::Span<VocodeJob* const> jobs,
                                                            int n_timesteps) = 0;
  // Stage 2: one estimator call (CFG by batch doubling) advancing every row
  // that is not done by one Euler step, each at its own t.
  virtual absl::Status Step(FlowBatch& batch) = 0;
  // Stage 3: HiFT for every row (rows of equal length together); fills the
  // jobs' outputs. The batch must be done.
  virtual absl::Status Vocode(FlowBatch& batch, absl::Span<VocodeJob* const> jobs) = 0;
};

struct LoadOptions {
  bool verify_hashes = true;
  // Torch CPU threads for batches (process-wide; set before the first batch).
  // 0 keeps torch's default (one per core). Useful with several replicas or
  // other work on one CPU host.
  int intra_op_threads = 0;
};

// Loads a model directory onto "cpu" or "cuda:N" (the LibTorch runner,
// torch_vocoder.cc), or onto the simulated accelerator for "sim", "sim:NAME"
// and "sim:PATH.json" (sim_vocoder.h; needs no weights). FailedPrecondition
// when the export's device does not match, NotFound / DataLoss /
// InvalidArgument from the manifest or the simulator profile.
absl::StatusOr<std::unique_ptr<Vocoder>> LoadVocoder(const std::string& model_dir,
                                                     const std::string& device,
                                                     const LoadOptions& options = {});

// A tensor from a tensor bag, as plain data (tests and tools stay torch-free).
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> f32;    // when the tensor is floating point
  std::vector<int64_t> i64;  // when it is integral
};
absl::StatusOr<std::map<std::string, HostTensor>> ReadTensorBag(const std::string& path);

// Reads voices/<id>.pt into VoiceData (ReadTensorBag, then VoiceFromTensors).
absl::StatusOr<VoiceData> ReadVoiceFile(const std::string& path);

// A voice file's tensors as VoiceData: prompt_token integral, prompt_feat and
// embedding floating point, each holding as many values as its shape says.
// InvalidArgument naming `path` and the tensor otherwise. Shapes against the
// model are ValidateVoice's job.
absl::StatusOr<VoiceData> VoiceFromTensors(const std::map<std::string, HostTensor>& bag,
                                           const std::string& path);

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_VOCODER_H_

// The S3Gen model runner's interface: vocoding jobs in, audio out.
// No torch types here (the implementation, torch_vocoder.cc, keeps them behind
// this interface), so the server and its tests compile without torch headers.
//
// A job is one row: its own speech tokens, its own voice (different voices
// share a batch), its left context, final flag, noise position and HiFT
// caches. Run vocodes a whole batch that shares n_timesteps. The stages
// (NewFlowBatch, Admit, Step, Retire, Drop) expose the ODE solve as a
// *running set* of rows for step-level scheduling: rows join between Euler
// steps, each follows its own n_timesteps schedule at its own t, and leave
// when done (vocoded) or dropped; see docs/model-format.md. Both model
// variants run through the same API (the manifest says which): standard
// (cosine schedule, CFG by batch doubling) and turbo (linear schedule, the
// end time r per row, no guidance: one estimator row per job).
//
// Thread-safety: a Vocoder is thread-compatible: one thread (the batcher's
// GPU thread) runs batches and stages. PrepareVoice is thread-safe. A
// FlowBatch is thread-compatible and belongs to the runner that made it.
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

// What Run checks before any work, shared by every runner: a non-empty
// batch, n_timesteps in 1..100, PrepareJob on each job (errors prefixed with
// "job i: ") and each job's voice prepared by `runner`. InvalidArgument.
absl::Status PrepareBatch(absl::Span<VocodeJob* const> jobs, int n_timesteps,
                          const Manifest& manifest, const Vocoder& runner);

// What Admit checks before any work: a non-empty batch, one n_timesteps per
// job, and per job (errors prefixed with "job i: ") n_timesteps in 1..100,
// PrepareJob and the voice prepared by `runner`. InvalidArgument.
absl::Status PrepareAdmit(absl::Span<VocodeJob* const> jobs, absl::Span<const int> n_timesteps,
                          const Manifest& manifest, const Vocoder& runner);

// A row of a running set: stable for the row's life in its FlowBatch, never
// reused by that FlowBatch (ids count up from 0).
using RowId = int64_t;

// The device state of a running set of rows between Euler steps: encoded
// rows join (Admit), advance (Step), and leave (Retire, Drop). Rows may be at
// different steps of different schedules. Made by Vocoder::NewFlowBatch and
// usable only with the runner that made it.
// Thread-compatible.
class FlowBatch {
 public:
  virtual ~FlowBatch() = default;
  virtual int rows() const = 0;
  // The current rows, in row order (admission order; leaving rows keep the
  // order of the others).
  virtual std::vector<RowId> row_ids() const = 0;
  // Steps the row has taken (0 after Admit); -1 for an id not in the set.
  virtual int steps_taken(RowId row) const = 0;
  // The row's own schedule length (its n_timesteps at Admit); 0 for an id not
  // in the set.
  virtual int n_timesteps(RowId row) const = 0;
  // The set's padded length in mel frames (the longest row's frames; what a
  // Step's estimator call runs at); 0 when empty.
  virtual int64_t padded_frames() const = 0;
  // The row's valid frames (prompt + tokens, less the lookahead when not
  // final); 0 for an id not in the set.
  virtual int64_t frames(RowId row) const = 0;
  // The row has taken all its steps (false for an id not in the set).
  bool done(RowId row) const {
    const int n = n_timesteps(row);
    return n > 0 && steps_taken(row) >= n;
  }
  // Rows not done: what the next Step advances.
  int pending_rows() const {
    int pending = 0;
    for (RowId r : row_ids()) pending += done(r) ? 0 : 1;
    return pending;
  }
};

// What Retire checks before any work: every row in `batch` and listed once
// (InvalidArgument), one job per row (InvalidArgument), every row done
// (FailedPrecondition).
absl::Status CheckRetire(const FlowBatch& batch, absl::Span<const RowId> rows, size_t jobs);
// What Drop checks: every row in `batch` and listed once (InvalidArgument).
absl::Status CheckDrop(const FlowBatch& batch, absl::Span<const RowId> rows);

class Vocoder {
 public:
  virtual ~Vocoder() = default;
  virtual const Manifest& manifest() const = 0;
  virtual std::string device() const = 0;

  // Validates and uploads a voice. Thread-safe.
  virtual absl::StatusOr<std::shared_ptr<const Voice>> PrepareVoice(VoiceData data) = 0;

  // Whole-solve batching: NewFlowBatch, Admit with n_timesteps for every job,
  // Step until every row is done, Retire all; fills every job's outputs.
  // Errors: InvalidArgument (a bad job; PrepareBatch), ResourceExhausted
  // (device out of memory), Internal (model failure). Never throws.
  // Implemented once here over the stage API (validate.cc) for every runner.
  virtual absl::Status Run(absl::Span<VocodeJob* const> jobs, int n_timesteps);

  // An empty running set on this runner's device.
  virtual std::unique_ptr<FlowBatch> NewFlowBatch() = 0;

  // Stage 1: PrepareAdmit, one encoder call for all the jobs, initial noise;
  // appends one row per job at step 0 of its own n_timesteps (re-padding the
  // set's tensors when the new rows are longer, padding the new rows when
  // shorter). A row's conditioning is built here, once: CFG-doubled for the
  // standard model (mu / zeros, spks / zeros, cond / zeros), as is for turbo.
  // Returns the new rows' ids, in job
  // order. The jobs need not outlive the call (Retire takes them again).
  // Errors: InvalidArgument (a bad job, or a batch of another runner),
  // ResourceExhausted, Internal; on any error the set is unchanged.
  virtual absl::StatusOr<std::vector<RowId>> Admit(FlowBatch& batch,
                                                   absl::Span<VocodeJob* const> jobs,
                                                   absl::Span<const int> n_timesteps) = 0;

  // Stage 2: one estimator call advancing every row that is not done by one
  // Euler step, each at its own t of its own schedule (standard: cosine, CFG
  // by batch doubling; turbo: linear, with r = the step's end time, no
  // doubling). OK and no work when no row is pending. On error (InvalidArgument
  // for a batch of another runner aside) the rows' ODE state is undefined:
  // the caller drops every row.
  virtual absl::Status Step(FlowBatch& batch) = 0;

  // Stage 3: HiFT for the given rows (rows of equal vocoded length together:
  // HiFT is not causal), filling jobs[i]'s outputs (mel, audio, source) from
  // rows[i]; the rows leave the set (compacting its tensors), whether HiFT
  // succeeds or not. CheckRetire's errors leave the set unchanged.
  // Errors: CheckRetire's, ResourceExhausted, Internal.
  virtual absl::Status Retire(FlowBatch& batch, absl::Span<const RowId> rows,
                              absl::Span<VocodeJob* const> jobs) = 0;

  // Removes rows without vocoding them (cancelled, expired, failed).
  // CheckDrop's errors (unknown or repeated ids) leave the set unchanged.
  virtual absl::Status Drop(FlowBatch& batch, absl::Span<const RowId> rows) = 0;
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

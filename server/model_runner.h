// Wires the batcher to the model: a batcher Job that carries a model
// VocodeJob, and the BatchRunner that runs a batch of them on a Vocoder.
// Lives in server/ because it is the one place that knows both (the batcher
// knows nothing of the model, the model nothing of the batcher).
//
// Thread-safety: ModelBatchRunner::Run is called on the batcher's GPU thread
// only. VoiceFingerprint is thread-safe.
#ifndef VOCODER_SERVER_MODEL_RUNNER_H_
#define VOCODER_SERVER_MODEL_RUNNER_H_

#include <functional>
#include <memory>
#include <optional>

#include "batcher/batcher.h"
#include "model/device.h"
#include "model/vocoder.h"

namespace vocoder::server {

// Content fingerprint of a voice's conditioning: equal tensors give equal
// keys, whatever the voice is called or which object holds it.
batcher::Fingerprint VoiceFingerprint(const model::VoiceData& voice);

class ModelJob final : public batcher::Job {
 public:
  // Called once on the GPU thread with the finished job (outputs filled when
  // status is OK). Must not block.
  using Done = std::function<void(absl::Status, const batcher::BatchInfo&, model::VocodeJob&)>;

  ModelJob(model::VocodeJob job, batcher::Fingerprint voice, uint32_t n_timesteps,
           uint64_t stream_id, batcher::TimePoint deadline,
           std::shared_ptr<const batcher::Cancellation> cancellation, Done done);

  void Complete(absl::Status status, const batcher::BatchInfo& info) override;
  model::VocodeJob& vocode() { return job_; }
  uint32_t n_timesteps() const { return key().compat; }

 private:
  model::VocodeJob job_;
  Done done_;
};

class Metrics;

class ModelBatchRunner final : public batcher::BatchRunner {
 public:
  // `metrics` (optional) gets the device's CUDA memory after each batch.
  explicit ModelBatchRunner(model::Vocoder& vocoder, Metrics* metrics = nullptr);
  // Every job must be a ModelJob; the batcher guarantees a shared compat key,
  // i.e. one n_timesteps per batch.
  absl::Status Run(absl::Span<batcher::Job* const> jobs) override;

 private:
  model::Vocoder& vocoder_;
  Metrics* const metrics_;
  std::optional<model::Device> cuda_;  // set when the model runs on CUDA
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_MODEL_RUNNER_H_

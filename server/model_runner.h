// Wires the batcher to the model: the BatchRunner that runs a batch of
// ModelJobs (server/model_job.h) on a Vocoder.
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
#include "server/model_job.h"

namespace vocoder::server {

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

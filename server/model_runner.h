// Wires the batcher to the model: the BatchRunner that runs a batch of
// ModelJobs (server/model_job.h) on a Vocoder as whole solves, and the
// StepRunner (--scheduling step) that keeps the model's running set
// (model::FlowBatch) and maps each running job to its row.
// Lives in server/ because it is the one place that knows both (the batcher
// knows nothing of the model, the model nothing of the batcher).
//
// Thread-safety: every BatchRunner and StepRunner method is called on the
// batcher's GPU thread only (thread-compatible). VoiceFingerprint is
// thread-safe.
//
// Invariant (step): rows_ holds exactly the jobs whose rows are in flow_; a
// failed Step empties both (the rows' ODE state is gone), Retire and Drop take
// their jobs out of both whatever the model says.
#ifndef VOCODER_SERVER_MODEL_RUNNER_H_
#define VOCODER_SERVER_MODEL_RUNNER_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "batcher/batcher.h"
#include "batcher/step_runner.h"
#include "model/device.h"
#include "model/vocoder.h"
#include "server/model_job.h"

namespace vocoder::server {

class Metrics;

class ModelBatchRunner final : public batcher::BatchRunner, public batcher::StepRunner {
 public:
  // `metrics` (optional) gets the device's CUDA memory after each batch.
  explicit ModelBatchRunner(model::Vocoder& vocoder, Metrics* metrics = nullptr);
  // Every job must be a ModelJob; the batcher guarantees a shared compat key,
  // i.e. one n_timesteps per batch.
  absl::Status Run(absl::Span<batcher::Job* const> jobs) override;

  // StepRunner (batcher/step_runner.h): every job a ModelJob, its
  // n_timesteps its compat key.
  absl::Status Admit(absl::Span<batcher::Job* const> jobs) override;
  absl::Status Step() override;
  absl::Status Retire(absl::Span<batcher::Job* const> jobs) override;
  void Drop(absl::Span<batcher::Job* const> jobs) override;

 private:
  void ReportMemory();
  // Removes `jobs` from rows_, returning their rows (jobs not running: none).
  std::vector<model::RowId> TakeRows(absl::Span<batcher::Job* const> jobs);

  model::Vocoder& vocoder_;
  Metrics* const metrics_;
  std::optional<model::Device> cuda_;       // set when the model runs on CUDA
  std::unique_ptr<model::FlowBatch> flow_;  // the running set; created on first Admit
  std::map<const batcher::Job*, model::RowId> rows_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_MODEL_RUNNER_H_

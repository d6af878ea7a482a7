// A batcher Job that carries a model VocodeJob, the content fingerprint of a
// voice, and the completion interface a call implements to receive its
// finished jobs. No torch, no gRPC: the reactor core and its tests use it
// without either (ModelBatchRunner, in model_runner.h, runs these jobs).
//
// Thread-safety: VoiceFingerprint is thread-safe; a ModelJob belongs to the
// batcher between Submit and Complete.
#ifndef VOCODER_SERVER_MODEL_JOB_H_
#define VOCODER_SERVER_MODEL_JOB_H_

#include <functional>
#include <memory>

#include "batcher/batcher.h"
#include "model/vocoder.h"

namespace vocoder::server {

// Content fingerprint of a voice's conditioning: equal tensors give equal
// keys, whatever the voice is called or which object holds it.
batcher::Fingerprint VoiceFingerprint(const model::VoiceData& voice);

// What receives a finished job: implemented by the calls (StreamCore,
// UnaryCore) that submit jobs.
class JobCompletion {
 public:
  // Exactly once per submitted job, on the batcher's GPU thread: OK with the
  // job's outputs filled, or why it did not run. Must not block.
  virtual void OnJobComplete(absl::Status status, const batcher::BatchInfo& info,
                             model::VocodeJob& job) = 0;

 protected:
  ~JobCompletion() = default;
};

class ModelJob final : public batcher::Job {
 public:
  // For callers without a completion object (warm-up, tests).
  using Done = std::function<void(absl::Status, const batcher::BatchInfo&, model::VocodeJob&)>;

  // `done` must outlive the job's completion.
  ModelJob(model::VocodeJob job, batcher::Fingerprint voice, uint32_t n_timesteps,
           uint64_t stream_id, batcher::TimePoint deadline,
           std::shared_ptr<const batcher::Cancellation> cancellation, JobCompletion* done);
  ModelJob(model::VocodeJob job, batcher::Fingerprint voice, uint32_t n_timesteps,
           uint64_t stream_id, batcher::TimePoint deadline,
           std::shared_ptr<const batcher::Cancellation> cancellation, Done done);

  void Complete(absl::Status status, const batcher::BatchInfo& info) override;
  model::VocodeJob& vocode() { return job_; }
  uint32_t n_timesteps() const { return key().compat; }

 private:
  model::VocodeJob job_;
  JobCompletion* const completion_ = nullptr;
  Done done_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_MODEL_JOB_H_

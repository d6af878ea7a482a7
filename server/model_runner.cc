#include "server/model_runner.h"

#include <vector>

#include "model/runtime.h"
#include "server/metrics.h"

namespace vocoder::server {

batcher::Fingerprint VoiceFingerprint(const model::VoiceData& voice) {
  batcher::Fingerprint fp = batcher::FingerprintBytes(voice.prompt_tokens.data(),
                                                      voice.prompt_tokens.size() * sizeof(int64_t));
  fp = batcher::FingerprintBytes(voice.prompt_feat.data(), voice.prompt_feat.size() * sizeof(float),
                                 fp);
  return batcher::FingerprintBytes(voice.embedding.data(), voice.embedding.size() * sizeof(float),
                                   fp);
}

ModelJob::ModelJob(model::VocodeJob job, batcher::Fingerprint voice, uint32_t n_timesteps,
                   uint64_t stream_id, batcher::TimePoint deadline,
                   std::shared_ptr<const batcher::Cancellation> cancellation, Done done)
    : batcher::Job(
          batcher::BatchKey{voice, n_timesteps}, stream_id,
          // A row costs its padded length: prompt + tokens.
          (job.voice ? job.voice->prompt_tokens() : 0) + static_cast<int64_t>(job.tokens.size()),
          deadline, std::move(cancellation)),
      job_(std::move(job)),
      done_(std::move(done)) {}

void ModelJob::Complete(absl::Status status, const batcher::BatchInfo& info) {
  done_(std::move(status), info, job_);
}

ModelBatchRunner::ModelBatchRunner(model::Vocoder& vocoder, Metrics* metrics)
    : vocoder_(vocoder), metrics_(metrics) {
  if (auto d = model::ParseDevice(vocoder.device()); d.ok() && d->is_cuda()) cuda_ = *d;
}

absl::Status ModelBatchRunner::Run(absl::Span<batcher::Job* const> jobs) {
  std::vector<model::VocodeJob*> rows;
  rows.reserve(jobs.size());
  for (batcher::Job* j : jobs) rows.push_back(&static_cast<ModelJob*>(j)->vocode());
  const auto steps = static_cast<int>(jobs.front()->key().compat);
  absl::Status status = vocoder_.Run(absl::MakeConstSpan(rows), steps);
  if (metrics_ != nullptr && cuda_) metrics_->SetCudaMemory(model::CudaMemoryAllocated(*cuda_));
  return status;
}

}  // namespace vocoder::server

#include "server/model_job.h"

namespace vocoder::server {
namespace {

int64_t RowCost(const model::VocodeJob& job) {
  // A row costs its padded length: prompt + tokens.
  return (job.voice ? job.voice->prompt_tokens() : 0) + static_cast<int64_t>(job.tokens.size());
}

}  // namespace

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
                   std::shared_ptr<const batcher::Cancellation> cancellation, JobCompletion* done)
    : batcher::Job(batcher::BatchKey{voice, n_timesteps}, stream_id, RowCost(job), deadline,
                   std::move(cancellation)),
      job_(std::move(job)),
      completion_(done) {}

ModelJob::ModelJob(model::VocodeJob job, batcher::Fingerprint voice, uint32_t n_timesteps,
                   uint64_t stream_id, batcher::TimePoint deadline,
                   std::shared_ptr<const batcher::Cancellation> cancellation, Done done)
    : batcher::Job(batcher::BatchKey{voice, n_timesteps}, stream_id, RowCost(job), deadline,
                   std::move(cancellation)),
      job_(std::move(job)),
      done_(std::move(done)) {}

void ModelJob::Complete(absl::Status status, const batcher::BatchInfo& info) {
  if (completion_ != nullptr) {
    completion_->OnJobComplete(std::move(status), info, job_);
  } else {
    done_(std::move(status), info, job_);
  }
}

}  // namespace vocoder::server

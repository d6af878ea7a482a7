#include "server/model_runner.h"

#include <vector>

#include "model/runtime.h"
#include "server/metrics.h"

namespace vocoder::server {

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

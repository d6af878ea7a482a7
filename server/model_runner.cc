#include "server/model_runner.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "model/runtime.h"
#include "server/metrics.h"

namespace vocoder::server {
namespace {

model::VocodeJob* Vocode(batcher::Job* j) { return &static_cast<ModelJob*>(j)->vocode(); }

}  // namespace

ModelBatchRunner::ModelBatchRunner(model::Vocoder& vocoder, Metrics* metrics)
    : vocoder_(vocoder), metrics_(metrics) {
  if (auto d = model::ParseDevice(vocoder.device()); d.ok() && d->is_cuda()) cuda_ = *d;
}

void ModelBatchRunner::ReportMemory() {
  if (metrics_ != nullptr && cuda_) metrics_->SetCudaMemory(model::CudaMemoryAllocated(*cuda_));
}

absl::Status ModelBatchRunner::Run(absl::Span<batcher::Job* const> jobs) {
  std::vector<model::VocodeJob*> rows;
  rows.reserve(jobs.size());
  for (batcher::Job* j : jobs) rows.push_back(Vocode(j));
  const auto steps = static_cast<int>(jobs.front()->key().compat);
  absl::Status status = vocoder_.Run(absl::MakeConstSpan(rows), steps);
  ReportMemory();
  return status;
}

absl::Status ModelBatchRunner::Admit(absl::Span<batcher::Job* const> jobs) {
  if (flow_ == nullptr) flow_ = vocoder_.NewFlowBatch();
  std::vector<model::VocodeJob*> vocode;
  std::vector<int> steps;
  vocode.reserve(jobs.size());
  steps.reserve(jobs.size());
  for (batcher::Job* j : jobs) {
    if (rows_.count(j) > 0) return absl::InternalError("Admit: job is already running");
    vocode.push_back(Vocode(j));
    steps.push_back(static_cast<int>(j->key().compat));
  }
  absl::StatusOr<std::vector<model::RowId>> ids =
      vocoder_.Admit(*flow_, absl::MakeConstSpan(vocode), absl::MakeConstSpan(steps));
  ReportMemory();
  if (!ids.ok()) return ids.status();
  if (ids->size() != jobs.size()) {
    return absl::InternalError(
        absl::StrCat("Admit returned ", ids->size(), " rows for ", jobs.size(), " jobs"));
  }
  for (size_t i = 0; i < jobs.size(); ++i) rows_[jobs[i]] = (*ids)[i];
  return absl::OkStatus();
}

absl::Status ModelBatchRunner::Step() {
  if (flow_ == nullptr) return absl::OkStatus();
  absl::Status status = vocoder_.Step(*flow_);
  if (!status.ok()) {
    // The rows' ODE state is undefined: the batcher fails every running job.
    flow_.reset();
    rows_.clear();
  }
  return status;
}

std::vector<model::RowId> ModelBatchRunner::TakeRows(absl::Span<batcher::Job* const> jobs) {
  std::vector<model::RowId> ids;
  ids.reserve(jobs.size());
  for (batcher::Job* j : jobs) {
    auto it = rows_.find(j);
    if (it == rows_.end()) continue;
    ids.push_back(it->second);
    rows_.erase(it);
  }
  return ids;
}

absl::Status ModelBatchRunner::Retire(absl::Span<batcher::Job* const> jobs) {
  std::vector<model::VocodeJob*> vocode;
  vocode.reserve(jobs.size());
  for (batcher::Job* j : jobs) vocode.push_back(Vocode(j));
  const std::vector<model::RowId> ids = TakeRows(jobs);
  if (flow_ == nullptr || ids.size() != jobs.size()) {
    if (flow_ != nullptr && !ids.empty()) (void)vocoder_.Drop(*flow_, absl::MakeConstSpan(ids));
    return absl::InternalError("Retire: a job has no running row");
  }
  absl::Status status =
      vocoder_.Retire(*flow_, absl::MakeConstSpan(ids), absl::MakeConstSpan(vocode));
  if (!status.ok()) {
    // The rows leave whatever happened: CheckRetire's errors leave them in.
    std::vector<model::RowId> left;
    for (model::RowId id : ids) {
      if (flow_->n_timesteps(id) > 0) left.push_back(id);
    }
    if (!left.empty()) (void)vocoder_.Drop(*flow_, absl::MakeConstSpan(left));
  }
  ReportMemory();
  return status;
}

void ModelBatchRunner::Drop(absl::Span<batcher::Job* const> jobs) {
  const std::vector<model::RowId> ids = TakeRows(jobs);
  if (flow_ == nullptr || ids.empty()) return;
  (void)vocoder_.Drop(*flow_, absl::MakeConstSpan(ids));
}

}  // namespace vocoder::server

#include "server/metrics.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vocoder::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

double Seconds(batcher::Duration d) { return std::chrono::duration<double>(d).count(); }

// Powers of two up to max (1, 2, 4, ..., max): batch sizes.
Histogram::BucketBoundaries PowersOfTwo(int max) {
  Histogram::BucketBoundaries b;
  for (int v = 1; v < max; v *= 2) b.push_back(v);
  b.push_back(max);
  return b;
}

// 1-2.5-5 steps from `lo` to `hi` seconds: latencies.
Histogram::BucketBoundaries Latency(double lo, double hi) {
  Histogram::BucketBoundaries b;
  for (double d = lo; d <= hi * 1.0001; d *= 10) {
    for (double m : {1.0, 2.5, 5.0}) {
      if (d * m <= hi * 1.0001) b.push_back(d * m);
    }
  }
  return b;
}

const char* CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kUnknown:
      return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

Metrics::Metrics(prometheus::Registry& r, const MetricsInfo& info)
    : requests_(BuildCounter()
                    .Name("vocoder_requests_total")
                    .Help("RPCs finished, by method and gRPC status code")
                    .Register(r)),
      batch_items_(
          BuildCounter()
              .Name("vocoder_batch_items_total")
              .Help("Jobs run in batches; rate(items)/rate(batches) is the mean batch size")
              .Register(r)
              .Add({{"model", info.model}})),
      batch_frames_(BuildCounter()
                        .Name("vocoder_batch_frames_total")
                        .Help("Mel frames the flow computed, padding included (rows x longest)")
                        .Register(r)
                        .Add({})),
      padding_frames_(BuildCounter()
                          .Name("vocoder_padding_frames_total")
                          .Help("Of vocoder_batch_frames_total, frames that were padding")
                          .Register(r)
                          .Add({})),
      audio_seconds_(BuildCounter()
                         .Name("vocoder_audio_seconds_total")
                         .Help("Seconds of audio delivered to clients (writes the transport "
                               "accepted; unary: responses sent with OK)")
                         .Register(r)
                         .Add({})),
      audio_undelivered_seconds_(
          BuildCounter()
              .Name("vocoder_audio_undelivered_seconds_total")
              .Help("Seconds of audio computed but never delivered (the call was cancelled, "
                    "failed or timed out first): wasted GPU time")
              .Register(r)
              .Add({})),
      gpu_busy_(BuildCounter()
                    .Name("vocoder_gpu_busy_seconds_total")
                    .Help("Seconds the GPU thread spent running batches")
                    .Register(r)
                    .Add({})),
      oom_splits_(BuildCounter()
                      .Name("vocoder_oom_splits_total")
                      .Help("Batches that ran out of device memory and were retried as halves")
                      .Register(r)
                      .Add({})),
      batch_size_(BuildHistogram()
                      .Name("vocoder_batch_size")
                      .Help("Jobs per batch (the flow sees twice as many rows: CFG)")
                      .Register(r)
                      .Add({{"model", info.model}}, PowersOfTwo(info.max_batch_size))),
      fill_ratio_(BuildHistogram()
                      .Name("vocoder_batch_fill_ratio")
                      .Help("Batch size / max batch size: batch utilization")
                      .Register(r)
                      .Add({}, Histogram::BucketBoundaries{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                           0.9, 1.0})),
      steps_(BuildCounter()
                 .Name("vocoder_steps_total")
                 .Help("Euler steps run over the running set (--scheduling step)")
                 .Register(r)
                 .Add({{"model", info.model}})),
      step_rows_(BuildHistogram()
                     .Name("vocoder_step_running_rows")
                     .Help("Running rows per Euler step (--scheduling step; a standard model's "
                           "flow sees twice as many, CFG; a turbo model's as many)")
                     .Register(r)
                     .Add({{"model", info.model}}, PowersOfTwo(info.max_batch_size))),
      step_cap_(BuildGauge()
                    .Name("vocoder_step_row_cap")
                    .Help("Running-row cap learned from the step cost curve at the last step "
                          "decision (<= max_batch_size; --scheduling step)")
                    .Register(r)
                    .Add({})),
      voice_groups_(BuildHistogram()
                        .Name("vocoder_batch_voice_groups")
                        .Help("Distinct voices per batch (--scheduling batch) or per Euler step "
                              "(--scheduling step)")
                        .Register(r)
                        .Add({}, Histogram::BucketBoundaries{1, 2, 3, 4, 6, 8, 12, 16, 32})),
      queue_wait_(BuildHistogram()
                      .Name("vocoder_queue_wait_seconds")
                      .Help("Submit to batch start, per job")
                      .Register(r)
                      .Add({}, Latency(1e-5, 5))),
      compute_(BuildHistogram()
                   .Name("vocoder_batch_compute_seconds")
                   .Help("Batch run time (encoder, ODE, HiFT, copies)")
                   .Register(r)
                   .Add({{"model", info.model}}, Latency(1e-3, 50))),
      first_audio_(BuildHistogram()
                       .Name("vocoder_time_to_first_audio_seconds")
                       .Help("First token chunk received to first audio sent, per stream")
                       .Register(r)
                       .Add({}, Latency(1e-3, 50))),
      chunk_latency_(BuildHistogram()
                         .Name("vocoder_chunk_latency_seconds")
                         .Help("Token chunk received to the audio it released sent")
                         .Register(r)
                         .Add({}, Latency(1e-3, 50))),
      queue_depth_(BuildGauge()
                       .Name("vocoder_queue_depth")
                       .Help("Jobs queued for the GPU thread")
                       .Register(r)
                       .Add({})),
      streams_(BuildGauge()
                   .Name("vocoder_inflight_streams")
                   .Help("Open StreamVocode and Vocode calls")
                   .Register(r)
                   .Add({})),
      voices_(BuildGauge()
                  .Name("vocoder_registered_voices")
                  .Help("Voices registered")
                  .Register(r)
                  .Add({})),
      draining_(BuildGauge()
                    .Name("vocoder_draining")
                    .Help("1 while draining after SIGTERM")
                    .Register(r)
                    .Add({})),
      model_loaded_(BuildGauge()
                        .Name("vocoder_model_loaded")
                        .Help("1 once the model is loaded and warmed up")
                        .Register(r)
                        .Add({{"model", info.model}})),
      cuda_memory_(BuildGauge()
                       .Name("vocoder_cuda_memory_allocated_bytes")
                       .Help("Bytes held by the CUDA caching allocator (0 on cpu)")
                       .Register(r)
                       .Add({})) {
  auto& chunks = BuildCounter()
                     .Name("vocoder_chunks_total")
                     .Help("Vocoding jobs (chunks) finished, by outcome")
                     .Register(r);
  const char* outcomes[] = {"ok", "error", "expired", "cancelled", "shutdown"};
  for (size_t i = 0; i < chunks_.size(); ++i) chunks_[i] = &chunks.Add({{"outcome", outcomes[i]}});
  auto& rejections = BuildCounter()
                         .Name("vocoder_rejections_total")
                         .Help("Requests or jobs turned away before the GPU, by reason")
                         .Register(r);
  const char* reasons[] = {"queue_full", "stream_cap",      "draining", "not_ready", "deadline",
                           "invalid",    "voice_not_found", "idle",     "peer_cap"};
  for (size_t i = 0; i < rejections_.size(); ++i) {
    rejections_[i] = &rejections.Add({{"reason", reasons[i]}});
  }
  auto& batches = BuildCounter()
                      .Name("vocoder_batches_total")
                      .Help("Batches run, by the trigger that fired them")
                      .Register(r);
  for (int t = 0; t < batcher::kNumTriggers; ++t) {
    batches_[static_cast<size_t>(t)] =
        &batches.Add({{"model", info.model},
                      {"trigger", batcher::TriggerName(static_cast<batcher::Trigger>(t))}});
  }
  auto& decisions = BuildCounter()
                        .Name("vocoder_step_decisions_total")
                        .Help("Step-boundary decisions of --scheduling step, by reason")
                        .Register(r);
  for (int i = 0; i < batcher::kNumStepReasons; ++i) {
    const auto reason = static_cast<batcher::StepReason>(i);
    if (reason == batcher::StepReason::kWait) continue;  // not an acting decision
    step_decisions_[static_cast<size_t>(i)] =
        &decisions.Add({{"reason", batcher::StepReasonName(reason)}});
  }
  BuildGauge()
      .Name("vocoder_build_info")
      .Help("Constant 1; labels carry the version and the batching configuration")
      .Register(r)
      .Add({{"version", info.version},
            {"model", info.model},
            {"max_batch_size", absl::StrCat(info.max_batch_size)},
            {"max_wait_ms", absl::StrFormat("%g", info.max_wait_ms)},
            {"device", info.device},
            {"scheduling", info.scheduling},
            {"variant", info.variant},
            {"n_timesteps", absl::StrCat(info.n_timesteps)}})
      .Set(1);
}

std::string DeviceKind(const std::string& device) {
  const std::string kind = device.substr(0, device.find(':'));
  return kind == "cuda" || kind == "sim" ? kind : "cpu";
}

void Metrics::OnReject(batcher::RejectReason reason) {
  Reject(reason == batcher::RejectReason::kQueueFull ? Rejection::kQueueFull
                                                     : Rejection::kDraining);
}

void Metrics::OnJobDone(batcher::JobOutcome outcome, batcher::Duration queue_wait) {
  chunks_[static_cast<size_t>(outcome)]->Increment();
  queue_wait_.Observe(Seconds(queue_wait));
}

void Metrics::OnBatch(const batcher::BatchRecord& b) {
  batches_[static_cast<size_t>(b.trigger)]->Increment();
  batch_items_.Increment(b.size);
  // Costs are in tokens; the flow runs two frames per token.
  batch_frames_.Increment(2.0 * static_cast<double>(b.padded_tokens));
  padding_frames_.Increment(2.0 * static_cast<double>(b.padded_tokens - b.real_tokens));
  batch_size_.Observe(b.size);
  fill_ratio_.Observe(b.fill_ratio());
  compute_.Observe(Seconds(b.compute));
  voice_groups_.Observe(b.voices);
}

// Voice groups per decision are no longer observed: under mixed grouping a
// drain is one group whatever the voices (vocoder_batch_voice_groups counts
// distinct voices per batch instead).
void Metrics::OnDrain(int, int) {}

void Metrics::OnStepDecision(batcher::StepReason reason, int cap) {
  if (auto* c = step_decisions_[static_cast<size_t>(reason)]; c != nullptr) c->Increment();
  step_cap_.Set(cap);
}

void Metrics::OnStep(const batcher::StepRecord& step) {
  steps_.Increment();
  step_rows_.Observe(step.rows);
  voice_groups_.Observe(step.voices);
}
void Metrics::OnQueueDepth(int64_t depth) { queue_depth_.Set(static_cast<double>(depth)); }
void Metrics::OnBusy(batcher::Duration busy) { gpu_busy_.Increment(Seconds(busy)); }

void Metrics::OnOutOfMemorySplit(int /*size*/) { oom_splits_.Increment(); }

void Metrics::Request(const std::string& rpc, const absl::Status& status) {
  const int code = static_cast<int>(status.code());
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard lock(request_mu_);
    auto& slot = request_counters_[{rpc, code}];
    if (slot == nullptr) slot = &requests_.Add({{"rpc", rpc}, {"code", CodeName(status.code())}});
    counter = slot;
  }
  counter->Increment();
}

void Metrics::Reject(Rejection reason) { rejections_[static_cast<size_t>(reason)]->Increment(); }
void Metrics::FirstAudio(double s) { first_audio_.Observe(s); }
void Metrics::ChunkLatency(double s) { chunk_latency_.Observe(s); }
void Metrics::AudioDelivered(double s) { audio_seconds_.Increment(s); }
void Metrics::AudioUndelivered(double s) { audio_undelivered_seconds_.Increment(s); }
void Metrics::SetStreams(int n) { streams_.Set(n); }
void Metrics::SetVoices(size_t n) { voices_.Set(static_cast<double>(n)); }
void Metrics::SetDraining(bool d) { draining_.Set(d ? 1 : 0); }
void Metrics::SetModelLoaded(bool l) { model_loaded_.Set(l ? 1 : 0); }
void Metrics::SetCudaMemory(int64_t bytes) { cuda_memory_.Set(static_cast<double>(bytes)); }

}  // namespace vocoder::server

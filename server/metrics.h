// vocoderd's Prometheus metrics (docs/metrics.md): one struct of the series
// references returned by prometheus-cpp, built once from an injected registry.
// It observes the batcher (BatcherObserver) and the service (requests, chunk
// latency, first audio, audio delivered and undelivered). Every label value is from a fixed
// set (RPC names, gRPC code names, trigger and outcome names): no voice or
// request ids.
//
// Thread-safety: all methods are thread-safe (prometheus-cpp metrics are).
#ifndef VOCODER_SERVER_METRICS_H_
#define VOCODER_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "batcher/stats.h"

namespace vocoder::server {

struct MetricsInfo {
  std::string version = "0.1.0";
  std::string model = "s3gen";  // e.g. "s3gen-tiny" (size from the manifest)
  int max_batch_size = 32;
  double max_wait_ms = 5;
  std::string device = "cpu";        // "cpu", "cuda" or "sim" (the simulated accelerator)
  std::string scheduling = "batch";  // "batch" or "step" (--scheduling)
  std::string variant = "standard";  // the served model: "standard" or "turbo" (manifest)
  int n_timesteps = 10;              // its default Euler steps (manifest)
};

// The device label of /metrics for a Vocoder::device() name ("cpu",
// "cuda:0", "sim:h200-estimate"): its kind, "cpu", "cuda" or "sim".
std::string DeviceKind(const std::string& device);

// Why a request was turned away before the GPU (vocoder_rejections_total).
enum class Rejection {
  kQueueFull,
  kStreamCap,
  kDraining,
  kNotReady,
  kDeadline,
  kInvalid,
  kVoiceNotFound,
  kIdle,     // a stream sent nothing for --stream-idle-timeout-s
  kPeerCap,  // --max-streams-per-peer
};

class Metrics final : public batcher::BatcherObserver {
 public:
  Metrics(prometheus::Registry& registry, const MetricsInfo& info);

  // Batcher observer.
  void OnReject(batcher::RejectReason reason) override;
  void OnJobDone(batcher::JobOutcome outcome, batcher::Duration queue_wait) override;
  void OnBatch(const batcher::BatchRecord& batch) override;
  void OnDrain(int groups, int batches) override;
  void OnQueueDepth(int64_t depth) override;
  void OnBusy(batcher::Duration busy) override;
  void OnOutOfMemorySplit(int size) override;
  void OnStepDecision(batcher::StepReason reason, int cap) override;
  void OnStep(const batcher::StepRecord& step) override;

  // Service.
  // rpc: "StreamVocode", "Vocode", "RegisterVoice", ...; counts the final
  // status and, for refusals, the rejection reason it implies.
  void Request(const std::string& rpc, const absl::Status& status);
  void Reject(Rejection reason);
  void FirstAudio(double seconds);
  void ChunkLatency(double seconds);
  // Audio the client got (vocoder_audio_seconds_total).
  void AudioDelivered(double seconds);
  // Audio computed for a call that never delivered it.
  void AudioUndelivered(double seconds);
  void SetStreams(int streams);
  void SetVoices(size_t voices);
  void SetDraining(bool draining);
  void SetModelLoaded(bool loaded);
  void SetCudaMemory(int64_t bytes);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  std::map<std::pair<std::string, int>, prometheus::Counter*> request_counters_;
  std::mutex request_mu_;  // guards request_counters_ (lazily filled, bounded)
  std::array<prometheus::Counter*, 5> chunks_{};      // by JobOutcome
  std::array<prometheus::Counter*, 9> rejections_{};  // by Rejection
  std::array<prometheus::Counter*, batcher::kNumTriggers> batches_{};
  std::array<prometheus::Counter*, batcher::kNumStepReasons> step_decisions_{};
  prometheus::Counter& batch_items_;
  prometheus::Counter& batch_frames_;
  prometheus::Counter& padding_frames_;
  prometheus::Counter& audio_seconds_;
  prometheus::Counter& audio_undelivered_seconds_;
  prometheus::Counter& gpu_busy_;
  prometheus::Counter& oom_splits_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& fill_ratio_;
  prometheus::Counter& steps_;
  prometheus::Histogram& step_rows_;
  prometheus::Gauge& step_cap_;
  prometheus::Histogram& voice_groups_;
  prometheus::Histogram& queue_wait_;
  prometheus::Histogram& compute_;
  prometheus::Histogram& first_audio_;
  prometheus::Histogram& chunk_latency_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& streams_;
  prometheus::Gauge& voices_;
  prometheus::Gauge& draining_;
  prometheus::Gauge& model_loaded_;
  prometheus::Gauge& cuda_memory_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_METRICS_H_

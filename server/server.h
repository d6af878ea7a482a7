// vocoderd's lifecycle: builds the batcher, voices, service and gRPC server
// around a loaded model, serves, and drains.
//
// Drain, in order: (1) readiness NOT_SERVING and draining set, (2) new RPCs
// get UNAVAILABLE, (3) wait until open streams reach 0, the grace period
// passes or InterruptDrain() is called (a second SIGTERM/SIGINT), (4) every
// call still open is finished with UNAVAILABLE and its queued jobs dropped,
// (5) grpc::Server::Shutdown, (6) the batcher completes what is queued with
// an error status and stops its thread, (7) the model is released.
//
// A sweeper thread finishes streams whose input has been idle for
// --stream-idle-timeout-s (once a second).
//
// Thread-safety: Drain may be called from any thread, once; InterruptDrain
// from any thread at any time.
#ifndef VOCODER_SERVER_SERVER_H_
#define VOCODER_SERVER_SERVER_H_

#include <grpcpp/server.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "batcher/batcher.h"
#include "config/config.h"
#include "model/vocoder.h"
#include "server/admission.h"
#include "server/call_core.h"
#include "server/executor.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/model_runner.h"
#include "server/service.h"
#include "server/voice_registry.h"

namespace vocoder::server {

inline constexpr char kReadinessService[] = "vocoder.v1.Vocoder";

batcher::BatcherOptions BatcherOptionsFrom(const config::Config& config);

class VocoderServer {
 public:
  // Loads voices (config.voices_dir, else <model_dir>/voices), warms the
  // model up, starts the batcher and the gRPC server (health + reflection),
  // then marks itself ready.
  static absl::StatusOr<std::unique_ptr<VocoderServer>> Start(
      const config::Config& config, std::unique_ptr<model::Vocoder> vocoder);
  ~VocoderServer();

  int port() const { return port_; }
  // The /metrics port (0 when --metrics-listen is empty).
  int metrics_port() const;
  prometheus::Registry& registry() { return *registry_; }
  const ServingState& state() const { return state_; }
  batcher::Batcher& batcher() { return *batcher_; }
  VoiceRegistry& voices() { return *voices_; }

  Admission& admission() { return *admission_; }
  const CallTracker& calls() const { return calls_; }

  // Graceful drain (see the file comment); returns when everything stopped.
  void Drain(std::chrono::milliseconds grace);
  // Ends a running (or the next) drain's wait at once. Thread-safe.
  void InterruptDrain();

 private:
  VocoderServer() = default;
  absl::Status Warmup();

  config::Config config_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<model::Vocoder> vocoder_;
  std::unique_ptr<ModelBatchRunner> runner_;
  batcher::SystemClock clock_;
  std::unique_ptr<batcher::Batcher> batcher_;
  std::unique_ptr<VoiceRegistry> voices_;
  std::unique_ptr<Executor> executor_;
  ServingState state_;
  EdgeLimits limits_;
  std::unique_ptr<Admission> admission_;
  CallTracker calls_;
  std::unique_ptr<VocoderService> service_;
  // The idle sweeper.
  std::thread sweeper_;
  std::mutex sweeper_mu_;
  std::condition_variable sweeper_cv_;
  bool sweeper_stop_ = false;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool drained_ = false;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_SERVER_H_

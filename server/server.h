// vocoderd's lifecycle: builds the batcher, voices, service and gRPC server
// around a loaded model, serves, and drains.
//
// Drain, in order: (1) readiness NOT_SERVING and draining set, (2) new RPCs
// get UNAVAILABLE, (3) wait until open streams reach 0 or the grace period
// passes, (4) grpc::Server::Shutdown(deadline) cancels what is left, (5) the
// batcher settles its queue and stops its thread, (6) the model is released.
//
// Thread-safety: Drain and Wait may be called from any thread, once each.
#ifndef VOCODER_SERVER_SERVER_H_
#define VOCODER_SERVER_SERVER_H_

#include <grpcpp/server.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "batcher/batcher.h"
#include "config/config.h"
#include "model/vocoder.h"
#include "server/executor.h"
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

  // Graceful drain (see the file comment); returns when everything stopped.
  void Drain(std::chrono::milliseconds grace);

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
  std::unique_ptr<VocoderService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool drained_ = false;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_SERVER_H_

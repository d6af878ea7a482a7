// The vocoder.v1.Vocoder gRPC service: one reactor per StreamVocode stream
// (refcounted, at most one write in flight, writes queued), unary Vocode, and
// the voice RPCs. Turns RPCs into batcher jobs and completions into writes.
//
// The voice RPCs are implemented in voice_service.cc (VoiceService).
//
// Thread-safety: gRPC calls the reactions on its threads; job completions
// arrive on the Executor. All reactor state is guarded by its mutex.
#ifndef VOCODER_SERVER_SERVICE_H_
#define VOCODER_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "batcher/batcher.h"
#include "config/config.h"
#include "server/executor.h"
#include "server/metrics.h"
#include "server/voice_registry.h"
#include "server/voice_service.h"
#include "vocoder/v1/vocoder.grpc.pb.h"

namespace vocoder::server {

// Process-wide serving state shared by the service and the lifecycle code.
struct ServingState {
  std::atomic<bool> ready{false};     // model loaded and warmed up
  std::atomic<bool> draining{false};  // SIGTERM received
  std::atomic<int> streams{0};        // open StreamVocode and Vocode calls
  std::atomic<uint64_t> next_stream_id{1};
};

struct ServiceDeps {
  batcher::Batcher& batcher;
  VoiceRegistry& voices;
  Executor& executor;
  ServingState& state;
  const model::Manifest& manifest;
  const config::Config& config;
  Metrics* metrics = nullptr;  // optional
};

class VocoderService final : public v1::Vocoder::CallbackService {
 public:
  explicit VocoderService(ServiceDeps deps) : d_(deps) {}

  grpc::ServerBidiReactor<v1::StreamVocodeRequest, v1::StreamVocodeResponse>* StreamVocode(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Vocode(grpc::CallbackServerContext* context,
                                   const v1::VocodeRequest* request,
                                   v1::VocodeResponse* response) override;
  grpc::ServerUnaryReactor* RegisterVoice(grpc::CallbackServerContext* context,
                                          const v1::RegisterVoiceRequest* request,
                                          v1::Voice* response) override;
  grpc::ServerUnaryReactor* GetVoice(grpc::CallbackServerContext* context,
                                     const v1::GetVoiceRequest* request,
                                     v1::Voice* response) override;
  grpc::ServerUnaryReactor* ListVoices(grpc::CallbackServerContext* context,
                                       const v1::ListVoicesRequest* request,
                                       v1::ListVoicesResponse* response) override;
  grpc::ServerUnaryReactor* DeleteVoice(grpc::CallbackServerContext* context,
                                        const v1::DeleteVoiceRequest* request,
                                        google::protobuf::Empty* response) override;

  const ServiceDeps& deps() const { return d_; }

 private:
  ServiceDeps d_;
  VoiceService voice_service_{d_};
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_SERVICE_H_

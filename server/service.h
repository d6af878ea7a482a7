// The vocoder.v1.Vocoder gRPC service: StreamVocode and Vocode are thin gRPC
// adapters around the reactor core (server/call_core.h: admission, validation,
// jobs, writes, backpressure, accounting), plus the voice RPCs.
//
// The voice RPCs are implemented in voice_service.cc (VoiceService).
//
// Thread-safety: gRPC calls the reactions on its threads; job completions
// arrive on the Executor. All call state is guarded by the call's mutex.
#ifndef VOCODER_SERVER_SERVICE_H_
#define VOCODER_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "batcher/batcher.h"
#include "config/config.h"
#include "server/admission.h"
#include "server/call_core.h"
#include "server/executor.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/voice_registry.h"
#include "server/voice_service.h"
#include "vocoder/v1/vocoder.grpc.pb.h"

namespace vocoder::server {

struct ServiceDeps {
  batcher::Batcher& batcher;
  VoiceRegistry& voices;
  Executor& executor;
  ServingState& state;
  const model::Manifest& manifest;
  const config::Config& config;
  Admission& admission;
  CallTracker& calls;
  const batcher::Clock& clock;
  const EdgeLimits& limits;
  Metrics* metrics = nullptr;  // optional
};

class VocoderService final : public v1::Vocoder::CallbackService {
 public:
  explicit VocoderService(ServiceDeps deps);

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
  EdgeDeps edge_;
  VoiceService voice_service_{d_};
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_SERVICE_H_

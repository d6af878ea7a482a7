// The voice RPCs of vocoder.v1.Vocoder (RegisterVoice, GetVoice, ListVoices,
// DeleteVoice): request checks, paging and the mapping onto the
// VoiceRegistry. VocoderService delegates its four voice methods here.
//
// Thread-safety: the methods are called on gRPC's callback threads and may
// run concurrently; the registry does its own locking.
#ifndef VOCODER_SERVER_VOICE_SERVICE_H_
#define VOCODER_SERVER_VOICE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "vocoder/v1/vocoder.grpc.pb.h"

namespace vocoder::server {

struct ServiceDeps;

class VoiceService {
 public:
  // `deps` must outlive the service.
  explicit VoiceService(const ServiceDeps& deps) : d_(deps) {}

  grpc::ServerUnaryReactor* RegisterVoice(grpc::CallbackServerContext* context,
                                          const v1::RegisterVoiceRequest* request,
                                          v1::Voice* response);
  grpc::ServerUnaryReactor* GetVoice(grpc::CallbackServerContext* context,
                                     const v1::GetVoiceRequest* request, v1::Voice* response);
  grpc::ServerUnaryReactor* ListVoices(grpc::CallbackServerContext* context,
                                       const v1::ListVoicesRequest* request,
                                       v1::ListVoicesResponse* response);
  grpc::ServerUnaryReactor* DeleteVoice(grpc::CallbackServerContext* context,
                                        const v1::DeleteVoiceRequest* request,
                                        google::protobuf::Empty* response);

 private:
  const ServiceDeps& d_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_VOICE_SERVICE_H_

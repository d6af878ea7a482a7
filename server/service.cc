#include "server/service.h"

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/status.h"

namespace vocoder::server {
namespace {

// The client's gRPC deadline as a steady-clock time point (the batcher's
// deadline for the call's jobs).
batcher::TimePoint JobDeadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return batcher::kNever;
  }
  return batcher::SteadyClock::now() +
         std::chrono::duration_cast<batcher::Duration>(deadline - std::chrono::system_clock::now());
}

// StreamVocode on gRPC's callback API: the transport of a StreamCore.
class StreamReactor final
    : public grpc::ServerBidiReactor<v1::StreamVocodeRequest, v1::StreamVocodeResponse>,
      public StreamCore {
 public:
  StreamReactor(const EdgeDeps& d, grpc::CallbackServerContext* ctx)
      : StreamCore(d, PeerHost(ctx->peer()), JobDeadline(ctx)), ctx_(ctx) {
    Start();
  }

  void OnReadDone(bool ok) override { ReadDone(ok); }
  void OnWriteDone(bool ok) override { WriteDone(ok); }
  void OnCancel() override { Cancelled(); }
  void OnDone() override { Done(); }

 private:
  void TransportRead(v1::StreamVocodeRequest* request) override { StartRead(request); }
  void TransportWrite(const v1::StreamVocodeResponse* response) override { StartWrite(response); }
  bool TransportCancelled() const override { return ctx_->IsCancelled(); }
  void TransportFinish(const absl::Status& status) override { Finish(ToGrpcStatus(status)); }

  grpc::CallbackServerContext* const ctx_;
};

// Vocode on gRPC's callback API: the transport of a UnaryCore.
class UnaryVocodeReactor final : public grpc::ServerUnaryReactor, public UnaryCore {
 public:
  UnaryVocodeReactor(const EdgeDeps& d, grpc::CallbackServerContext* ctx,
                     const v1::VocodeRequest* request, v1::VocodeResponse* response)
      : UnaryCore(d, PeerHost(ctx->peer()), JobDeadline(ctx)) {
    Start(*request, response);
  }

  void OnCancel() override { Cancelled(); }
  void OnDone() override { Done(); }

 private:
  void TransportFinish(const absl::Status& status) override { Finish(ToGrpcStatus(status)); }
};

}  // namespace

VocoderService::VocoderService(ServiceDeps deps)
    : d_(deps), edge_{d_.batcher,
                      d_.executor,
                      d_.state,
                      d_.admission,
                      d_.calls,
                      d_.clock,
                      d_.limits,
                      [voices = &d_.voices](const std::string& id) { return voices->Get(id); },
                      d_.metrics} {}

grpc::ServerBidiReactor<v1::StreamVocodeRequest, v1::StreamVocodeResponse>*
VocoderService::StreamVocode(grpc::CallbackServerContext* context) {
  return new StreamReactor(edge_, context);
}

grpc::ServerUnaryReactor* VocoderService::Vocode(grpc::CallbackServerContext* context,
                                                 const v1::VocodeRequest* request,
                                                 v1::VocodeResponse* response) {
  return new UnaryVocodeReactor(edge_, context, request, response);
}

}  // namespace vocoder::server

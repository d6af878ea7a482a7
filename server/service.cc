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

grpc::ServerUnaryReactor* Reply(const ServiceDeps& d, const char* rpc,
                                grpc::CallbackServerContext* ctx, const absl::Status& s) {
  if (d.metrics != nullptr) {
    d.metrics->Request(rpc, s);
    d.metrics->SetVoices(d.voices.size());
  }
  auto* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

void FillVoice(const VoiceEntry& e, int sample_rate, v1::Voice* v) {
  v->set_voice_id(e.id);
  v->set_display_name(e.display_name);
  v->set_natural_sample_rate_hz(static_cast<uint32_t>(sample_rate));
  v->set_create_time_unix_ms(e.create_time_unix_ms);
  v->set_fingerprint(e.fingerprint.ToHex());
  v->set_prompt_tokens(static_cast<uint32_t>(e.voice->prompt_tokens()));
}

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

grpc::ServerUnaryReactor* VocoderService::RegisterVoice(grpc::CallbackServerContext* context,
                                                        const v1::RegisterVoiceRequest* request,
                                                        v1::Voice* response) {
  if (static_cast<int64_t>(request->ByteSizeLong()) > d_.config.max_voice_bytes) {
    return Reply(d_, "RegisterVoice", context,
                 absl::ResourceExhaustedError(
                     absl::StrCat("voice upload is ", request->ByteSizeLong(), " bytes; at most ",
                                  d_.config.max_voice_bytes, " (--max-voice-bytes)")));
  }
  const v1::VoiceConditioning& c = request->conditioning();
  model::VoiceData data;
  data.prompt_tokens.assign(c.prompt_tokens().begin(), c.prompt_tokens().end());
  data.prompt_feat.assign(c.prompt_mel().begin(), c.prompt_mel().end());
  data.embedding.assign(c.embedding().begin(), c.embedding().end());
  if (c.prompt_frames() != 2 * data.prompt_tokens.size()) {
    return Reply(
        d_, "RegisterVoice", context,
        absl::InvalidArgumentError(absl::StrCat(
            "conditioning.prompt_frames is ", c.prompt_frames(), "; ", data.prompt_tokens.size(),
            " prompt tokens need ", 2 * data.prompt_tokens.size(), " frames")));
  }
  auto entry = d_.voices.Register(request->voice_id(), request->display_name(), std::move(data));
  if (!entry.ok()) return Reply(d_, "RegisterVoice", context, entry.status());
  FillVoice(*entry, d_.manifest.sample_rate, response);
  return Reply(d_, "RegisterVoice", context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VocoderService::GetVoice(grpc::CallbackServerContext* context,
                                                   const v1::GetVoiceRequest* request,
                                                   v1::Voice* response) {
  auto entry = d_.voices.Get(request->voice_id());
  if (!entry.ok()) return Reply(d_, "GetVoice", context, entry.status());
  FillVoice(*entry, d_.manifest.sample_rate, response);
  return Reply(d_, "GetVoice", context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VocoderService::ListVoices(grpc::CallbackServerContext* context,
                                                     const v1::ListVoicesRequest* request,
                                                     v1::ListVoicesResponse* response) {
  const auto all = d_.voices.List();
  const int page = request->page_size() > 0 ? request->page_size() : 100;
  size_t begin = 0;
  if (!request->page_token().empty()) {
    // The token is the last id of the previous page.
    while (begin < all.size() && all[begin].id <= request->page_token()) ++begin;
  }
  for (size_t i = begin; i < all.size() && i < begin + static_cast<size_t>(page); ++i) {
    FillVoice(all[i], d_.manifest.sample_rate, response->add_voices());
  }
  if (begin + static_cast<size_t>(page) < all.size()) {
    response->set_next_page_token(all[begin + static_cast<size_t>(page) - 1].id);
  }
  return Reply(d_, "ListVoices", context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VocoderService::DeleteVoice(grpc::CallbackServerContext* context,
                                                      const v1::DeleteVoiceRequest* request,
                                                      google::protobuf::Empty*) {
  return Reply(d_, "DeleteVoice", context, d_.voices.Delete(request->voice_id()));
}

}  // namespace vocoder::server

#include "server/voice_service.h"

#include "absl/strings/str_cat.h"
#include "server/service.h"
#include "server/status.h"

namespace vocoder::server {
namespace {

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

grpc::ServerUnaryReactor* VoiceService::RegisterVoice(grpc::CallbackServerContext* context,
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

grpc::ServerUnaryReactor* VoiceService::GetVoice(grpc::CallbackServerContext* context,
                                                 const v1::GetVoiceRequest* request,
                                                 v1::Voice* response) {
  auto entry = d_.voices.Get(request->voice_id());
  if (!entry.ok()) return Reply(d_, "GetVoice", context, entry.status());
  FillVoice(*entry, d_.manifest.sample_rate, response);
  return Reply(d_, "GetVoice", context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VoiceService::ListVoices(grpc::CallbackServerContext* context,
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

grpc::ServerUnaryReactor* VoiceService::DeleteVoice(grpc::CallbackServerContext* context,
                                                    const v1::DeleteVoiceRequest* request,
                                                    google::protobuf::Empty*) {
  return Reply(d_, "DeleteVoice", context, d_.voices.Delete(request->voice_id()));
}

// VocoderService's voice methods: delegated to the VoiceService.
grpc::ServerUnaryReactor* VocoderService::RegisterVoice(grpc::CallbackServerContext* context,
                                                        const v1::RegisterVoiceRequest* request,
                                                        v1::Voice* response) {
  return voice_service_.RegisterVoice(context, request, response);
}

grpc::ServerUnaryReactor* VocoderService::GetVoice(grpc::CallbackServerContext* context,
                                                   const v1::GetVoiceRequest* request,
                                                   v1::Voice* response) {
  return voice_service_.GetVoice(context, request, response);
}

grpc::ServerUnaryReactor* VocoderService::ListVoices(grpc::CallbackServerContext* context,
                                                     const v1::ListVoicesRequest* request,
                                                     v1::ListVoicesResponse* response) {
  return voice_service_.ListVoices(context, request, response);
}

grpc::ServerUnaryReactor* VocoderService::DeleteVoice(grpc::CallbackServerContext* context,
                                                      const v1::DeleteVoiceRequest* request,
                                                      google::protobuf::Empty* response) {
  return voice_service_.DeleteVoice(context, request, response);
}

}  // namespace vocoder::server

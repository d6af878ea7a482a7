#include "server/voice_service.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "batcher/job.h"
#include "server/service.h"
#include "server/status.h"

namespace vocoder::server {
namespace {

constexpr char kPageTokenPrefix[] = "v1.";
constexpr char kPageTokenSalt[] = "vocoderd ListVoices page after ";

std::string PageTokenCheck(const std::string& id) {
  const std::string keyed = absl::StrCat(kPageTokenSalt, id);
  const batcher::Fingerprint fp = batcher::FingerprintBytes(keyed.data(), keyed.size());
  return absl::StrCat(absl::Hex(fp.lo, absl::kZeroPad16));
}

// Admission for the voice RPCs: the repository is loaded once ready; a
// draining replica takes no new work.
absl::Status AdmitVoiceRpc(const ServiceDeps& d) {
  if (d.state.draining.load()) {
    if (d.metrics != nullptr) d.metrics->Reject(Rejection::kDraining);
    return absl::UnavailableError("server is draining; retry on another replica");
  }
  if (!d.state.ready.load()) {
    if (d.metrics != nullptr) d.metrics->Reject(Rejection::kNotReady);
    return absl::UnavailableError(
        "server is not ready yet (loading the model and the voice repository); retry shortly");
  }
  return absl::OkStatus();
}

void Count(const ServiceDeps& d, const char* rpc, const absl::Status& s) {
  if (d.metrics != nullptr) {
    d.metrics->Request(rpc, s);
    d.metrics->SetVoices(d.voices.size());
  }
}

grpc::ServerUnaryReactor* Reply(const ServiceDeps& d, const char* rpc,
                                grpc::CallbackServerContext* ctx, const absl::Status& s) {
  Count(d, rpc, s);
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
  v->set_prompt_tokens(static_cast<uint32_t>(e.prompt_tokens));
}

}  // namespace

std::string VoicePageToken(const std::string& last_id) {
  return absl::StrCat(kPageTokenPrefix, absl::BytesToHexString(last_id), ".",
                      PageTokenCheck(last_id));
}

absl::StatusOr<std::string> VoicePageCursor(const std::string& token) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        "page_token was not issued by this service; pass next_page_token from the previous "
        "ListVoices response unchanged, or leave it empty for the first page");
  };
  const std::string_view t(token);
  if (t.size() > 200 || t.rfind(kPageTokenPrefix, 0) != 0) return bad();
  const size_t dot = t.rfind('.');
  const std::string_view hex = t.substr(3, dot - 3);
  const std::string_view check = t.substr(dot + 1);
  if (dot < 3 || hex.empty() || hex.size() % 2 != 0 ||
      !std::all_of(hex.begin(), hex.end(), [](char c) { return std::isxdigit(c) != 0; })) {
    return bad();
  }
  std::string id = absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
  if (!ValidateVoiceId(id).ok() || check != PageTokenCheck(id)) return bad();
  return id;
}

VoiceService::VoiceService(const ServiceDeps& deps) : d_(deps), worker_([this] { Work(); }) {}

VoiceService::~VoiceService() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

bool VoiceService::Post(std::function<void()> work) {
  {
    MutexLock lock(mu_);
    if (static_cast<int>(queue_.size()) >= kMaxPendingVoiceWrites) return false;
    queue_.push_back(std::move(work));
  }
  cv_.notify_one();
  return true;
}

void VoiceService::Work() {
  while (true) {
    std::function<void()> work;
    {
      MutexLock lock(mu_);
      while (!stop_ && queue_.empty()) mu_.Wait(cv_);
      if (queue_.empty()) return;  // stopping, nothing left
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
  }
}

grpc::ServerUnaryReactor* VoiceService::RegisterVoice(grpc::CallbackServerContext* context,
                                                      const v1::RegisterVoiceRequest* request,
                                                      v1::Voice* response) {
  constexpr char kRpc[] = "RegisterVoice";
  if (absl::Status s = AdmitVoiceRpc(d_); !s.ok()) return Reply(d_, kRpc, context, s);
  if (static_cast<int64_t>(request->ByteSizeLong()) > d_.config.max_voice_bytes) {
    return Reply(d_, kRpc, context,
                 absl::ResourceExhaustedError(
                     absl::StrCat("voice upload is ", request->ByteSizeLong(), " bytes; at most ",
                                  d_.config.max_voice_bytes, " (--max-voice-bytes)")));
  }
  if (static_cast<int64_t>(request->ByteSizeLong()) > d_.config.max_message_bytes) {
    return Reply(d_, kRpc, context,
                 absl::InvalidArgumentError(absl::StrCat(
                     "voice upload is ", request->ByteSizeLong(), " bytes, over the server's ",
                     "--max-message-bytes limit of ", d_.config.max_message_bytes)));
  }
  if (request->display_name().size() > static_cast<size_t>(kMaxDisplayNameBytes)) {
    return Reply(
        d_, kRpc, context,
        absl::InvalidArgumentError(absl::StrCat("display_name is ", request->display_name().size(),
                                                " bytes; at most ", kMaxDisplayNameBytes)));
  }
  const v1::VoiceConditioning& c = request->conditioning();
  if (c.prompt_frames() != 2 * static_cast<uint64_t>(c.prompt_tokens_size())) {
    return Reply(
        d_, kRpc, context,
        absl::InvalidArgumentError(absl::StrCat(
            "conditioning.prompt_frames is ", c.prompt_frames(), "; ", c.prompt_tokens_size(),
            " prompt tokens need ", 2 * c.prompt_tokens_size(), " frames")));
  }
  auto* reactor = context->DefaultReactor();
  const ServiceDeps& d = d_;
  // The request and response stay valid until Finish.
  const bool queued = Post([&d, reactor, request, response] {
    const v1::VoiceConditioning& c = request->conditioning();
    model::VoiceData data;
    data.prompt_tokens.assign(c.prompt_tokens().begin(), c.prompt_tokens().end());
    data.prompt_feat.assign(c.prompt_mel().begin(), c.prompt_mel().end());
    data.embedding.assign(c.embedding().begin(), c.embedding().end());
    auto entry = d.voices.Register(request->voice_id(), request->display_name(), std::move(data));
    if (entry.ok()) FillVoice(*entry, d.manifest.sample_rate, response);
    const absl::Status s = entry.status();
    Count(d, "RegisterVoice", s);
    reactor->Finish(ToGrpcStatus(s));
  });
  if (!queued) {
    const absl::Status s = absl::ResourceExhaustedError(
        absl::StrCat("too many voice registrations in progress (", kMaxPendingVoiceWrites,
                     "); retry after a short backoff"));
    Count(d_, kRpc, s);
    reactor->Finish(ToGrpcStatus(s));
  }
  return reactor;
}

grpc::ServerUnaryReactor* VoiceService::GetVoice(grpc::CallbackServerContext* context,
                                                 const v1::GetVoiceRequest* request,
                                                 v1::Voice* response) {
  if (absl::Status s = AdmitVoiceRpc(d_); !s.ok()) return Reply(d_, "GetVoice", context, s);
  auto entry = d_.voices.Describe(request->voice_id());
  if (!entry.ok()) return Reply(d_, "GetVoice", context, entry.status());
  FillVoice(*entry, d_.manifest.sample_rate, response);
  return Reply(d_, "GetVoice", context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VoiceService::ListVoices(grpc::CallbackServerContext* context,
                                                   const v1::ListVoicesRequest* request,
                                                   v1::ListVoicesResponse* response) {
  constexpr char kRpc[] = "ListVoices";
  if (absl::Status s = AdmitVoiceRpc(d_); !s.ok()) return Reply(d_, kRpc, context, s);
  if (request->page_size() < 0) {
    return Reply(d_, kRpc, context,
                 absl::InvalidArgumentError(absl::StrCat("page_size must be >= 0 (0 = default ",
                                                         kDefaultVoicePageSize, "); was ",
                                                         request->page_size())));
  }
  std::string after;
  if (!request->page_token().empty()) {
    auto cursor = VoicePageCursor(request->page_token());
    if (!cursor.ok()) return Reply(d_, kRpc, context, cursor.status());
    after = *cursor;
  }
  const size_t page = static_cast<size_t>(request->page_size() == 0
                                              ? kDefaultVoicePageSize
                                              : std::min(request->page_size(), kMaxVoicePageSize));
  const size_t budget =
      std::min<size_t>(1 << 20, static_cast<size_t>(d_.config.max_message_bytes) / 4);
  const auto all = d_.voices.List();  // sorted by id
  auto it =
      after.empty()
          ? all.begin()
          : std::upper_bound(all.begin(), all.end(), after,
                             [](const std::string& id, const VoiceEntry& e) { return id < e.id; });
  size_t bytes = 0;
  for (; it != all.end() && static_cast<size_t>(response->voices_size()) < page; ++it) {
    v1::Voice v;
    FillVoice(*it, d_.manifest.sample_rate, &v);
    const size_t size = v.ByteSizeLong() + 8;  // field tag and length
    if (response->voices_size() > 0 && bytes + size > budget) break;
    bytes += size;
    *response->add_voices() = std::move(v);
  }
  if (it != all.end() && response->voices_size() > 0) {
    response->set_next_page_token(
        VoicePageToken(response->voices(response->voices_size() - 1).voice_id()));
  }
  return Reply(d_, kRpc, context, absl::OkStatus());
}

grpc::ServerUnaryReactor* VoiceService::DeleteVoice(grpc::CallbackServerContext* context,
                                                    const v1::DeleteVoiceRequest* request,
                                                    google::protobuf::Empty*) {
  constexpr char kRpc[] = "DeleteVoice";
  if (absl::Status s = AdmitVoiceRpc(d_); !s.ok()) return Reply(d_, kRpc, context, s);
  auto* reactor = context->DefaultReactor();
  const ServiceDeps& d = d_;
  const bool queued = Post([&d, reactor, request] {
    const absl::Status s = d.voices.Delete(request->voice_id());
    Count(d, "DeleteVoice", s);
    reactor->Finish(ToGrpcStatus(s));
  });
  if (!queued) {
    const absl::Status s = absl::ResourceExhaustedError(
        absl::StrCat("too many voice changes in progress (", kMaxPendingVoiceWrites,
                     "); retry after a short backoff"));
    Count(d_, kRpc, s);
    reactor->Finish(ToGrpcStatus(s));
  }
  return reactor;
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

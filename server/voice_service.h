// The voice RPCs of vocoder.v1.Vocoder (RegisterVoice, GetVoice, ListVoices,
// DeleteVoice): admission, request checks, paging and the mapping onto the
// VoiceRegistry (the voice repository). VocoderService delegates its four
// voice methods here.
//
// - Admission: every voice RPC gets UNAVAILABLE while the server is not ready
//   (the repository is not loaded yet) or draining, like the vocoding calls.
// - RegisterVoice and DeleteVoice block (device upload, fsync on a shared
//   filesystem): they run on the service's own worker thread, never on a gRPC
//   callback thread. At most `kMaxPendingVoiceWrites` wait; more get
//   RESOURCE_EXHAUSTED.
// - ListVoices pages by count (page_size, default 100, at most 1000) and by
//   bytes (a page stays under a quarter of --max-message-bytes, at most
//   1 MiB). Page tokens are opaque and checked: a token the server did not
//   issue is INVALID_ARGUMENT. Tokens are valid on every replica.
//
// Thread-safety: the RPC methods are called on gRPC's callback threads and
// may run concurrently. The destructor finishes queued registrations first.
#ifndef VOCODER_SERVER_VOICE_SERVICE_H_
#define VOCODER_SERVER_VOICE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "server/sync.h"
#include "vocoder/v1/vocoder.grpc.pb.h"

namespace vocoder::server {

struct ServiceDeps;

inline constexpr int kMaxPendingVoiceWrites = 16;
inline constexpr int kDefaultVoicePageSize = 100;
inline constexpr int kMaxVoicePageSize = 1000;

// The token for the page after `last_id`, and back (InvalidArgument when the
// token was not issued by a vocoderd).
std::string VoicePageToken(const std::string& last_id);
absl::StatusOr<std::string> VoicePageCursor(const std::string& token);

class VoiceService {
 public:
  // `deps` must outlive the service.
  explicit VoiceService(const ServiceDeps& deps);
  ~VoiceService();
  VoiceService(const VoiceService&) = delete;
  VoiceService& operator=(const VoiceService&) = delete;

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
  // Queues `work` for the worker thread; false when kMaxPendingVoiceWrites
  // are already waiting.
  bool Post(std::function<void()> work);
  void Work();

  const ServiceDeps& d_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_VOICE_SERVICE_H_

// Validation of vocoding requests, before any work is queued: the StreamVocode
// message sequence (config first and once, encodings, step counts, voices,
// token ids, gap-free sequence numbers, chunk and utterance sizes, nothing
// after the final chunk) and the unary Vocode request (the same, plus the row
// length and the response's size against the message limit). Every refusal is
// an absl::Status whose message says what to fix. No gRPC, no torch.
//
// Thread-compatible: a StreamValidator belongs to one stream.
#ifndef VOCODER_SERVER_REQUEST_VALIDATION_H_
#define VOCODER_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/limits.h"
#include "server/voice_registry.h"
#include "vocoder/v1/vocoder.pb.h"

namespace vocoder::server {

// Finds a registered voice (NotFound naming it otherwise).
using VoiceLookup = std::function<absl::StatusOr<VoiceEntry>(const std::string& voice_id)>;

struct StreamSetup {
  VoiceEntry voice;
  v1::AudioEncoding encoding = v1::PCM_S16LE;
  uint32_t n_timesteps = 10;
};

absl::StatusOr<StreamSetup> CheckConfig(const EdgeLimits& limits, const VoiceLookup& voices,
                                        const v1::StreamConfig& config);

// A request message over --max-message-bytes: InvalidArgument naming the
// limit. The transport accepts messages up to TransportReceiveLimit so that
// such a message reaches this check and is refused (and counted) with its own
// code; one over the transport's limit is rejected by gRPC itself, which the
// server only sees as a cancel.
absl::Status CheckRequestSize(size_t bytes, const EdgeLimits& limits);
int TransportReceiveLimit(int64_t max_message_bytes);

// Validated tokens with SOS/EOS (6561/6562) dropped.
absl::StatusOr<std::vector<int64_t>> CleanTokens(
    const google::protobuf::RepeatedField<uint32_t>& tokens, int vocab);

// One StreamVocode stream's message sequence.
class StreamValidator {
 public:
  struct Message {
    bool is_config = false;
    StreamSetup setup;            // is_config
    std::vector<int64_t> tokens;  // a chunk's clean tokens
    uint64_t sequence_number = 0;
    bool is_final = false;
  };

  StreamValidator(const EdgeLimits& limits, VoiceLookup voices)
      : limits_(limits), voices_(std::move(voices)) {}

  // The next message; an error ends the stream (InvalidArgument, NotFound).
  absl::StatusOr<Message> Next(const v1::StreamVocodeRequest& request);
  // The client half-closed: InvalidArgument before a config. A half-close
  // after the config ends the input (as is_final does).
  absl::Status EndOfInput();

  bool has_config() const { return has_config_; }
  bool input_done() const { return input_done_; }
  int64_t tokens() const { return tokens_; }

 private:
  const EdgeLimits& limits_;
  VoiceLookup voices_;
  bool has_config_ = false;
  bool input_done_ = false;
  uint64_t next_seq_ = 0;
  int64_t tokens_ = 0;
};

// A unary Vocode request, checked whole.
struct UnaryPlan {
  StreamSetup setup;
  std::vector<int64_t> tokens;
  // The response's audio size: checked against max_message_bytes before any
  // work is done.
  int64_t audio_bytes = 0;
};
absl::StatusOr<UnaryPlan> CheckUnary(const EdgeLimits& limits, const VoiceLookup& voices,
                                     const v1::VocodeRequest& request);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_REQUEST_VALIDATION_H_

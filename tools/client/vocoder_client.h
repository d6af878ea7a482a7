// A C++ client for vocoder.v1: streams an utterance as token chunks (as fast
// as possible or paced like a T3 front-end), stitches the audio by
// start_sample and records per-chunk latency and server timing. Used by the
// tests, the demo (vocoder-client) and the load generator.
//
// Thread-safety: a VocoderClient may be used from many threads at once (one
// call per thread); each call owns its own stream.
#ifndef VOCODER_TOOLS_CLIENT_VOCODER_CLIENT_H_
#define VOCODER_TOOLS_CLIENT_VOCODER_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vocoder/v1/vocoder.grpc.pb.h"

namespace vocoder::client {

struct ChunkRecord;

struct StreamOptions {
  std::string voice_id;
  v1::AudioEncoding encoding = v1::PCM_F32LE;
  uint32_t n_timesteps = 0;  // 0 = server default
  std::string request_id;
  // "" = any; "standard" or "turbo": the server refuses the stream
  // (INVALID_ARGUMENT) when it serves the other model variant.
  std::string model_variant;
  int chunk_tokens = 25;
  double tokens_per_second = 0;           // 0 = send as fast as possible
  std::chrono::milliseconds deadline{0};  // 0 = none
  int cancel_after_audio_chunks = -1;     // cancel once this many audio chunks arrived
  // Called on the reading thread as each audio chunk arrives (the load
  // generator's live view); must not block.
  std::function<void(const ChunkRecord&)> on_chunk;
  // When set and it becomes true, the call stops sending and is cancelled
  // (within one chunk interval when paced, 10 ms otherwise). Not owned.
  const std::atomic<bool>* stop = nullptr;
};

struct ChunkRecord {
  using Time = std::chrono::steady_clock::time_point;
  uint64_t sequence_number = 0;
  uint64_t start_sample = 0;
  uint32_t num_samples = 0;
  double latency_s = 0;       // its TokenChunk sent -> this audio received
  Time sent_at{};             // when that TokenChunk was written
  Time received_at{};         // when this audio was read
  bool first_audio = false;   // the utterance's first chunk with samples
  double first_audio_s = -1;  // when first_audio: first TokenChunk sent -> now
  uint32_t sample_rate_hz = 0;
  v1::ServerTiming timing;
};

struct StreamResult {
  grpc::Status status;
  v1::Started started;
  std::vector<float> audio;
  std::vector<ChunkRecord> chunks;
  double first_audio_s = -1;  // first chunk sent -> first audio received
  double total_s = 0;
  bool gap_free = true;  // every chunk started where the previous ended
  bool stopped = false;  // cancelled because options.stop became true
};

class VocoderClient {
 public:
  explicit VocoderClient(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::Vocoder::NewStub(channel)) {}

  StreamResult Stream(const std::vector<int64_t>& tokens, const StreamOptions& options);
  v1::Vocoder::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<v1::Vocoder::Stub> stub_;
};

// How CreateVocoderChannel builds a channel.
struct ChannelOptions {
  int max_receive_message_bytes = 64 << 20;
  // A channel of its own connections (several channels to one target then
  // use several HTTP/2 connections instead of sharing one).
  bool local_subchannel_pool = false;
};

// A channel to one vocoderd or to a fleet of them. `targets` is
//   - one address, "host:port", or any gRPC target URI;
//   - several IP addresses, "10.0.0.1:50051,10.0.0.2:50051" (or
//     "[::1]:1,[::1]:2"): one channel over all of them;
//   - "dns:///name:port": every address the name resolves to (a Kubernetes
//     headless Service), re-resolved when connections drop.
// Calls are spread with round_robin: each new call (stream) goes to the next
// ready replica. Returns nullptr and sets *error when `targets` is malformed
// (several host names: use a dns:/// name for them).
std::shared_ptr<grpc::Channel> CreateVocoderChannel(const std::string& targets,
                                                    const ChannelOptions& options,
                                                    std::string* error);

// Samples from an AudioChunk's bytes in the given encoding, scaled to [-1, 1].
std::vector<float> DecodeAudio(const std::string& bytes, v1::AudioEncoding encoding);
// Deterministic pseudo-random speech tokens (ids 0..6560).
std::vector<int64_t> DemoTokens(int n, uint64_t seed);
// 16-bit mono PCM WAV.
bool WriteWav(const std::string& path, const std::vector<float>& samples, int sample_rate);

}  // namespace vocoder::client

#endif  // VOCODER_TOOLS_CLIENT_VOCODER_CLIENT_H_

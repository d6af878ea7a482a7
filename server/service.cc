#include "server/service.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "server/model_runner.h"
#include "server/status.h"
#include "server/stream_session.h"

namespace vocoder::server {
namespace {

using v1::AudioEncoding;

constexpr int kMaxTimesteps = 50;

absl::Status Admit(const ServiceDeps& d) {
  if (d.state.draining.load()) {
    return absl::UnavailableError("server is draining; retry on another replica");
  }
  if (!d.state.ready.load()) {
    return absl::UnavailableError("model is not loaded yet; retry shortly");
  }
  if (d.state.streams.load() >= d.config.max_streams) {
    return absl::ResourceExhaustedError(
        absl::StrCat("stream limit reached (", d.config.max_streams,
                     " concurrent, --max-streams); retry after a short backoff"));
  }
  return absl::OkStatus();
}

// The client's gRPC deadline becomes the job's deadline in the batcher.
batcher::TimePoint JobDeadline(const grpc::CallbackServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return batcher::kNever;
  }
  return batcher::SteadyClock::now() +
         std::chrono::duration_cast<batcher::Duration>(deadline - std::chrono::system_clock::now());
}

struct StreamSetup {
  VoiceEntry voice;
  AudioEncoding encoding = v1::PCM_S16LE;
  uint32_t n_timesteps = 10;
};

absl::StatusOr<StreamSetup> CheckConfig(const ServiceDeps& d, const v1::StreamConfig& c) {
  StreamSetup s;
  if (c.encoding() != v1::PCM_S16LE && c.encoding() != v1::PCM_F32LE) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.encoding must be PCM_S16LE or PCM_F32LE; was ", AudioEncoding_Name(c.encoding())));
  }
  s.encoding = c.encoding();
  s.n_timesteps =
      c.n_timesteps() == 0 ? static_cast<uint32_t>(d.manifest.n_timesteps) : c.n_timesteps();
  if (s.n_timesteps > kMaxTimesteps) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.n_timesteps must be in 1..", kMaxTimesteps, " (0 = default ",
                     d.manifest.n_timesteps, "); was ", c.n_timesteps()));
  }
  if (c.voice_id().empty()) return absl::InvalidArgumentError("config.voice_id is required");
  auto voice = d.voices.Get(c.voice_id());
  if (!voice.ok()) return voice.status();
  s.voice = *voice;
  return s;
}

// Validated tokens with SOS/EOS dropped.
absl::StatusOr<std::vector<int64_t>> CleanTokens(
    const google::protobuf::RepeatedField<uint32_t>& in, int vocab) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(in.size()));
  for (int i = 0; i < in.size(); ++i) {
    const int64_t t = in.Get(i);
    if (t == model::kSosToken || t == model::kEosToken) continue;
    if (t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " of the chunk is ", t,
                                                     "; speech token ids must be in 0..", vocab - 1,
                                                     " (6561/6562 are dropped)"));
    }
    out.push_back(t);
  }
  return out;
}

std::string EncodeAudio(const std::vector<float>& samples, AudioEncoding encoding) {
  std::string out;
  if (encoding == v1::PCM_F32LE) {
    out.resize(samples.size() * sizeof(float));
    std::memcpy(out.data(), samples.data(), out.size());
    return out;
  }
  out.resize(samples.size() * 2);
  for (size_t i = 0; i < samples.size(); ++i) {
    const float x = std::clamp(samples[i], -1.0f, 1.0f);
    const auto v = static_cast<int16_t>(std::lrint(x * 32767.0f));
    out[2 * i] = static_cast<char>(v & 0xff);
    out[2 * i + 1] = static_cast<char>((v >> 8) & 0xff);
  }
  return out;
}

std::array<float, 9> PhaseFor(uint64_t stream_id) {
  std::mt19937_64 rng(stream_id * 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<float> u(-static_cast<float>(M_PI), static_cast<float>(M_PI));
  std::array<float, 9> p{};
  for (size_t h = 1; h < p.size(); ++h) p[h] = u(rng);
  return p;
}

void FillStarted(const ServiceDeps& d, const StreamSetup& s, const std::string& request_id,
                 v1::Started* started) {
  started->set_sample_rate_hz(static_cast<uint32_t>(d.manifest.sample_rate));
  started->set_encoding(s.encoding);
  started->set_samples_per_token(
      static_cast<uint32_t>(d.manifest.samples_per_frame * d.manifest.frames_per_token));
  started->set_request_id(request_id);
  started->set_n_timesteps(s.n_timesteps);
}

void FillTiming(const batcher::BatchInfo& info, v1::ServerTiming* t) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  t->set_queue_us(static_cast<uint32_t>(duration_cast<microseconds>(info.queue_wait).count()));
  t->set_compute_us(static_cast<uint32_t>(duration_cast<microseconds>(info.compute).count()));
  t->set_batch_size(static_cast<uint32_t>(info.batch_size));
}

// What every vocoding call shares: admission, the stream count the batcher's
// all_ready trigger relies on, cancellation of queued jobs, an idempotent
// finish, and a reference count: a call lives until gRPC is done with it
// (OnDone) and every job it submitted has completed.
class CallBase {
 public:
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  CallBase(const ServiceDeps& d, const char* rpc)
      : d_(d), rpc_(rpc), cancel_(std::make_shared<batcher::Cancellation>()) {}
  virtual ~CallBase() = default;
  // Sends the final status (the reactor's Finish).
  virtual void SendFinish(const grpc::Status& status) = 0;

  // Under mu_, from the derived constructor: refuses (and finishes) when
  // draining, not ready or at the stream cap.
  bool AdmitLocked() {
    if (absl::Status s = Admit(d_); !s.ok()) {
      if (d_.metrics != nullptr) {
        d_.metrics->Reject(d_.state.draining.load() ? Rejection::kDraining
                           : !d_.state.ready.load() ? Rejection::kNotReady
                                                    : Rejection::kStreamCap);
      }
      FinishLocked(s);
      return false;
    }
    admitted_ = true;
    const int streams = d_.state.streams.fetch_add(1) + 1;
    if (d_.metrics != nullptr) d_.metrics->SetStreams(streams);
    d_.batcher.StreamOpened();
    return true;
  }
  void Cancel(const char* why) {
    cancel_->Cancel();  // queued jobs of this call never reach the GPU
    std::lock_guard lock(mu_);
    FinishLocked(absl::CancelledError(why));
  }
  // From OnDone.
  void Done() {
    if (admitted_) {
      const int streams = d_.state.streams.fetch_sub(1) - 1;
      if (d_.metrics != nullptr) d_.metrics->SetStreams(streams);
      d_.batcher.StreamClosed();
    }
    Unref();
  }
  void FinishLocked(const absl::Status& status) {
    if (finished_) return;
    finished_ = true;
    if (!status.ok()) cancel_->Cancel();  // drop anything still queued
    if (d_.metrics != nullptr) {
      d_.metrics->Request(rpc_, status);
      if (status.code() == absl::StatusCode::kInvalidArgument) {
        d_.metrics->Reject(Rejection::kInvalid);
      } else if (status.code() == absl::StatusCode::kNotFound) {
        d_.metrics->Reject(Rejection::kVoiceNotFound);
      }
    }
    SendFinish(ToGrpcStatus(status));
  }
  // Audio leaving for the client: seconds produced.
  void CountAudio(size_t samples) {
    if (d_.metrics != nullptr) {
      d_.metrics->AudioProduced(static_cast<double>(samples) / d_.manifest.sample_rate);
    }
  }

  const ServiceDeps d_;
  const char* const rpc_;
  const std::shared_ptr<batcher::Cancellation> cancel_;
  std::mutex mu_;
  bool admitted_ = false;
  bool finished_ = false;

 private:
  std::atomic<int> refs_{1};
};

// Submits `job` for `owner`; `done` runs on the executor with the owner
// referenced. Returns the batcher's status (the job is dropped if not OK).
template <typename Owner, typename Done>
absl::Status SubmitJob(const ServiceDeps& d, Owner* owner, model::VocodeJob job,
                       const VoiceEntry& voice, uint32_t n_timesteps, uint64_t stream_id,
                       batcher::TimePoint deadline,
                       std::shared_ptr<const batcher::Cancellation> cancel, Done done) {
  owner->Ref();
  Executor* executor = &d.executor;
  std::unique_ptr<batcher::Job> j = std::make_unique<ModelJob>(
      std::move(job), voice.fingerprint, n_timesteps, stream_id, deadline, std::move(cancel),
      [owner, executor, done](absl::Status s, const batcher::BatchInfo& info,
                              model::VocodeJob& result) {
        executor->Post([owner, done, s = std::move(s), info, r = std::move(result)]() mutable {
          done(owner, s, info, r);
          owner->Unref();
        });
      });
  absl::Status s = d.batcher.Submit(&j);
  if (!s.ok()) owner->Unref();
  return s;
}

class StreamReactor final
    : public grpc::ServerBidiReactor<v1::StreamVocodeRequest, v1::StreamVocodeResponse>,
      public CallBase {
 public:
  StreamReactor(const ServiceDeps& d, grpc::CallbackServerContext* ctx)
      : CallBase(d, "StreamVocode"), ctx_(ctx) {
    std::lock_guard lock(mu_);
    if (!AdmitLocked()) return;
    stream_id_ = d_.state.next_stream_id.fetch_add(1);
    deadline_ = JobDeadline(ctx_);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard lock(mu_);
    if (finished_) return;
    if (!ok) {  // half-close: the utterance ends here
      if (!session_)
        return FinishLocked(absl::InvalidArgumentError("stream ended before a config"));
      session_->EndInput();
      return AdvanceLocked();
    }
    if (absl::Status s = HandleLocked(); !s.ok()) return FinishLocked(s);
    AdvanceLocked();
    // Keep reading after the final chunk too: a chunk after it is a client
    // error worth reporting; the half-close that follows is ignored.
    if (!finished_) StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    write_pending_ = false;
    if (!ok) return FinishLocked(absl::CancelledError("client stopped reading"));
    if (!writes_.empty()) return StartNextWriteLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override { Cancel("stream cancelled by the client"); }
  void OnDone() override { Done(); }

  void OnJobDone(const absl::Status& status, const batcher::BatchInfo& info,
                 model::VocodeJob& job) {
    std::lock_guard lock(mu_);
    if (finished_) return;
    if (!status.ok()) return FinishLocked(status);
    const auto start = static_cast<uint64_t>(session_->samples_emitted());
    std::vector<float> audio = session_->Complete(job);
    timing_ = info;
    QueueAudioLocked(std::move(audio), start, job_seq_);
    AdvanceLocked();
  }

 private:
  absl::Status HandleLocked() {
    if (request_.has_config()) {
      if (session_) return absl::InvalidArgumentError("config sent twice; send it only first");
      auto setup = CheckConfig(d_, request_.config());
      if (!setup.ok()) return setup.status();
      setup_ = *setup;
      session_.emplace(SessionOptions{}, setup_.voice.voice, PhaseFor(stream_id_));
      v1::StreamVocodeResponse r;
      FillStarted(d_, setup_, request_.config().request_id(), r.mutable_started());
      QueueWriteLocked(std::move(r));
      return absl::OkStatus();
    }
    if (!request_.has_chunk())
      return absl::InvalidArgumentError("empty request: set config or chunk");
    if (!session_) return absl::InvalidArgumentError("the first message must carry the config");
    const v1::TokenChunk& chunk = request_.chunk();
    if (session_->input_done()) {
      return absl::InvalidArgumentError("chunk after the final chunk (is_final was set)");
    }
    if (chunk.sequence_number() != next_seq_) {
      return absl::InvalidArgumentError(absl::StrCat("chunk sequence_number ",
                                                     chunk.sequence_number(), " but expected ",
                                                     next_seq_, " (no gaps, no repeats)"));
    }
    ++next_seq_;
    if (chunk.tokens_size() > d_.config.max_tokens_per_chunk) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk has ", chunk.tokens_size(), " tokens; at most ",
                       d_.config.max_tokens_per_chunk, " per chunk (--max-tokens-per-chunk)"));
    }
    auto tokens = CleanTokens(chunk.tokens(), d_.manifest.token_vocab);
    if (!tokens.ok()) return tokens.status();
    if (session_->tokens_received() + static_cast<int64_t>(tokens->size()) >
        d_.config.max_tokens_per_utterance) {
      return absl::InvalidArgumentError(
          absl::StrCat("utterance exceeds ", d_.config.max_tokens_per_utterance,
                       " tokens (--max-tokens-per-utterance); split it into several streams"));
    }
    session_->Append(*tokens);
    last_seq_ = chunk.sequence_number();
    arrivals_.emplace_back(last_seq_, std::chrono::steady_clock::now());
    if (chunk.is_final()) session_->EndInput();
    return absl::OkStatus();
  }

  // Submits the next job if one is ready; flushes and finishes at the end.
  void AdvanceLocked() {
    if (finished_ || !session_) return;
    if (auto job = session_->NextJob()) {
      job_seq_ = last_seq_;
      absl::Status s =
          SubmitJob(d_, this, std::move(*job), setup_.voice, setup_.n_timesteps, stream_id_,
                    deadline_, cancel_,
                    [](StreamReactor* self, const absl::Status& st, const batcher::BatchInfo& info,
                       model::VocodeJob& r) { self->OnJobDone(st, info, r); });
      if (!s.ok()) FinishLocked(s);
      return;
    }
    if (session_->input_done() && !session_->in_flight() && !session_->finished()) {
      const auto start = static_cast<uint64_t>(session_->samples_emitted());
      QueueAudioLocked(session_->Flush(), start, last_seq_);
    }
    MaybeFinishLocked();
  }

  void QueueAudioLocked(std::vector<float> audio, uint64_t start, uint64_t seq) {
    const bool last = session_->finished();
    if (audio.empty() && !last) return;
    ObserveLatencyLocked(seq, audio.size());
    v1::StreamVocodeResponse r;
    v1::AudioChunk* a = r.mutable_audio();
    a->set_audio(EncodeAudio(audio, setup_.encoding));
    a->set_sequence_number(seq);
    a->set_start_sample(start);
    a->set_num_samples(static_cast<uint32_t>(audio.size()));
    a->set_is_final(last);
    FillTiming(timing_, r.mutable_timing());
    QueueWriteLocked(std::move(r));
  }

  // Chunk latency (arrival of the chunk that released this audio -> now) and,
  // once, time to first audio (first chunk -> now).
  void ObserveLatencyLocked(uint64_t seq, size_t samples) {
    CountAudio(samples);
    if (d_.metrics == nullptr || samples == 0) return;
    const auto now = std::chrono::steady_clock::now();
    auto seconds = [&](auto t) { return std::chrono::duration<double>(now - t).count(); };
    if (!first_audio_sent_ && !arrivals_.empty()) {
      d_.metrics->FirstAudio(seconds(arrivals_.front().second));
      first_audio_sent_ = true;
    }
    while (arrivals_.size() > 1 && arrivals_.front().first < seq) arrivals_.pop_front();
    if (!arrivals_.empty() && arrivals_.front().first == seq) {
      d_.metrics->ChunkLatency(seconds(arrivals_.front().second));
    }
  }

  void QueueWriteLocked(v1::StreamVocodeResponse r) {
    writes_.push_back(std::move(r));
    if (!write_pending_) StartNextWriteLocked();
  }

  void StartNextWriteLocked() {
    write_pending_ = true;
    current_ = std::move(writes_.front());
    writes_.pop_front();
    StartWrite(&current_);
  }

  void MaybeFinishLocked() {
    if (session_ && session_->finished() && writes_.empty() && !write_pending_) {
      FinishLocked(absl::OkStatus());
    }
  }

  void SendFinish(const grpc::Status& status) override { Finish(status); }

  grpc::CallbackServerContext* const ctx_;
  bool write_pending_ = false;
  uint64_t stream_id_ = 0;
  batcher::TimePoint deadline_ = batcher::kNever;
  v1::StreamVocodeRequest request_;
  v1::StreamVocodeResponse current_;
  std::deque<v1::StreamVocodeResponse> writes_;
  StreamSetup setup_;
  std::optional<StreamSession> session_;
  uint64_t next_seq_ = 0;
  uint64_t last_seq_ = 0;
  uint64_t job_seq_ = 0;
  batcher::BatchInfo timing_;
  std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> arrivals_;
  bool first_audio_sent_ = false;
};

class UnaryVocodeReactor final : public grpc::ServerUnaryReactor, public CallBase {
 public:
  UnaryVocodeReactor(const ServiceDeps& d, grpc::CallbackServerContext* ctx,
                     const v1::VocodeRequest* request, v1::VocodeResponse* response)
      : CallBase(d, "Vocode"), response_(response) {
    std::lock_guard lock(mu_);
    if (!AdmitLocked()) return;
    if (absl::Status s = Start(ctx, *request); !s.ok()) FinishLocked(s);
  }

  void OnCancel() override { Cancel("call cancelled by the client"); }
  void OnDone() override { Done(); }

 private:
  absl::Status Start(grpc::CallbackServerContext* ctx, const v1::VocodeRequest& request) {
    auto setup = CheckConfig(d_, request.config());
    if (!setup.ok()) return setup.status();
    setup_ = *setup;
    if (request.tokens_size() > d_.config.max_tokens_per_utterance) {
      return absl::InvalidArgumentError(
          absl::StrCat("request has ", request.tokens_size(), " tokens; at most ",
                       d_.config.max_tokens_per_utterance, " (--max-tokens-per-utterance)"));
    }
    auto tokens = CleanTokens(request.tokens(), d_.manifest.token_vocab);
    if (!tokens.ok()) return tokens.status();
    const int64_t row =
        setup_.voice.voice->prompt_tokens() + static_cast<int64_t>(tokens->size()) + 3;
    if (row > d_.manifest.max_row_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "utterance of ", tokens->size(), " tokens is too long to vocode in one piece with this ",
          "voice (prompt + tokens must stay under ", d_.manifest.max_row_tokens,
          "); use StreamVocode"));
    }
    const uint64_t id = d_.state.next_stream_id.fetch_add(1);
    SessionOptions one_piece;  // unary: the whole utterance is one row
    one_piece.max_new_tokens = d_.manifest.max_row_tokens;
    session_.emplace(one_piece, setup_.voice.voice, PhaseFor(id));
    session_->Append(*tokens);
    session_->EndInput();
    FillStarted(d_, setup_, request.config().request_id(), response_->mutable_format());
    auto job = session_->NextJob();
    if (!job) {  // no tokens: empty audio
      FinishLocked(absl::OkStatus());
      return absl::OkStatus();
    }
    return SubmitJob(
        d_, this, std::move(*job), setup_.voice, setup_.n_timesteps, id, JobDeadline(ctx), cancel_,
        [](UnaryVocodeReactor* self, const absl::Status& st, const batcher::BatchInfo& info,
           model::VocodeJob& r) { self->OnJobDone(st, info, r); });
  }

  void OnJobDone(const absl::Status& status, const batcher::BatchInfo& info,
                 model::VocodeJob& job) {
    std::lock_guard lock(mu_);
    if (finished_) return;
    if (!status.ok()) return FinishLocked(status);
    const std::vector<float> audio = session_->Complete(job);
    CountAudio(audio.size());
    response_->set_audio(EncodeAudio(audio, setup_.encoding));
    FillTiming(info, response_->mutable_timing());
    FinishLocked(absl::OkStatus());
  }

  void SendFinish(const grpc::Status& status) override { Finish(status); }

  v1::VocodeResponse* const response_;
  StreamSetup setup_;
  std::optional<StreamSession> session_;
};

}  // namespace

grpc::ServerBidiReactor<v1::StreamVocodeRequest, v1::StreamVocodeResponse>*
VocoderService::StreamVocode(grpc::CallbackServerContext* context) {
  return new StreamReactor(d_, context);
}

grpc::ServerUnaryReactor* VocoderService::Vocode(grpc::CallbackServerContext* context,
                                                 const v1::VocodeRequest* request,
                                                 v1::VocodeResponse* response) {
  return new UnaryVocodeReactor(d_, context, request, response);
}

}  // namespace vocoder::server

#include "server/call_core.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/audio_encoding.h"

namespace vocoder::server {
namespace {

void FillStarted(const EdgeLimits& l, const StreamSetup& s, const std::string& request_id,
                 v1::Started* started) {
  started->set_sample_rate_hz(static_cast<uint32_t>(l.sample_rate));
  started->set_encoding(s.encoding);
  started->set_samples_per_token(static_cast<uint32_t>(l.samples_per_token()));
  started->set_request_id(request_id);
  started->set_n_timesteps(s.n_timesteps);
  started->set_model_variant(l.variant);
}

void FillTiming(const batcher::BatchInfo& info, v1::ServerTiming* t) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  t->set_queue_us(static_cast<uint32_t>(duration_cast<microseconds>(info.queue_wait).count()));
  t->set_compute_us(static_cast<uint32_t>(duration_cast<microseconds>(info.compute).count()));
  t->set_batch_size(static_cast<uint32_t>(info.batch_size));
}

Rejection RejectionOf(Refusal r) {
  switch (r) {
    case Refusal::kDraining:
      return Rejection::kDraining;
    case Refusal::kNotReady:
      return Rejection::kNotReady;
    case Refusal::kPeerCap:
      return Rejection::kPeerCap;
    default:
      return Rejection::kStreamCap;
  }
}

}  // namespace

// ---- CallTracker ----

void CallTracker::Add(CallCore* call) {
  call->Ref();
  MutexLock lock(mu_);
  calls_.insert(call);
}

void CallTracker::Remove(CallCore* call) {
  bool found = false;
  {
    MutexLock lock(mu_);
    found = calls_.erase(call) > 0;
  }
  if (found) call->Unref();
}

template <typename F>
void CallTracker::ForEach(F f) {
  // Reference the calls, then work on them without the tracker's lock: a
  // call's own lock is never taken under the tracker's.
  std::vector<CallCore*> calls;
  {
    MutexLock lock(mu_);
    calls.reserve(calls_.size());
    for (CallCore* c : calls_) {
      c->Ref();
      calls.push_back(c);
    }
  }
  for (CallCore* c : calls) {
    f(c);
    c->Unref();
  }
}

void CallTracker::SweepIdle(batcher::TimePoint now) {
  ForEach([now](CallCore* c) { c->CheckIdle(now); });
}

void CallTracker::AbortAll(const absl::Status& status) {
  ForEach([&status](CallCore* c) { c->Abort(status); });
}

size_t CallTracker::WaitingForClient() const {
  // As ForEach: no call's lock under the tracker's.
  std::vector<CallCore*> calls;
  {
    MutexLock lock(mu_);
    for (CallCore* c : calls_) {
      c->Ref();
      calls.push_back(c);
    }
  }
  size_t waiting = 0;
  for (CallCore* c : calls) {
    if (c->waiting_for_client()) ++waiting;
    c->Unref();
  }
  return waiting;
}

size_t CallTracker::size() const {
  MutexLock lock(mu_);
  return calls_.size();
}

// ---- CallCore ----

CallCore::CallCore(const EdgeDeps& d, const char* rpc, std::string peer,
                   batcher::TimePoint deadline)
    : d_(d),
      rpc_(rpc),
      peer_(std::move(peer)),
      deadline_(deadline),
      cancel_(std::make_shared<batcher::Cancellation>()) {}

CallCore::~CallCore() {
  // Every job has completed (each held a reference): what was computed and
  // never written is final now. No lock: nothing else references the call.
  const int64_t undelivered = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return computed_samples_ - delivered_samples_;
  }();
  if (d_.metrics != nullptr && undelivered > 0) {
    d_.metrics->AudioUndelivered(static_cast<double>(undelivered) / d_.limits.sample_rate);
  }
}

bool CallCore::finished() const {
  MutexLock lock(mu_);
  return finished_;
}

bool CallCore::AdmitLocked() {
  Refusal why = Refusal::kNone;
  if (absl::Status s = d_.admission.TryAdmit(peer_, &why); !s.ok()) {
    FinishLocked(s, RejectionOf(why));
    return false;
  }
  admitted_ = true;
  if (d_.metrics != nullptr) d_.metrics->SetStreams(d_.admission.open());
  d_.batcher.StreamOpened();
  d_.calls.Add(this);
  stream_id_ = d_.state.next_stream_id.fetch_add(1);
  return true;
}

void CallCore::Cancelled() {
  MutexLock lock(mu_);
  FinishCancelledLocked();
}

bool CallCore::DeadlinePassedLocked() const {
  // gRPC's deadline timer may fire a little before the steady-clock deadline
  // this call derived from the client's (a conversion between clocks): a
  // cancel that close to the deadline is the deadline.
  constexpr auto kDeadlineSlack = std::chrono::milliseconds(100);
  return deadline_ != batcher::kNever && d_.clock.Now() + kDeadlineSlack >= deadline_;
}

void CallCore::FinishCancelledLocked() {
  if (finished_) return;
  // What the client's own library reported: DEADLINE_EXCEEDED when its
  // deadline passed, else CANCELLED. At the deadline the batcher expires the
  // queued jobs by the same deadline (counted as expired), so they are not
  // cancelled here.
  if (DeadlinePassedLocked()) {
    FinishLocked(absl::DeadlineExceededError("the client's deadline passed"), Rejection::kDeadline,
                 /*cancel_jobs=*/false);
  } else {
    FinishLocked(absl::CancelledError("cancelled by the client"));
  }
}

void CallCore::Done() {
  bool admitted = false;
  {
    MutexLock lock(mu_);
    admitted = admitted_;
    admitted_ = false;
  }
  if (admitted) {
    d_.calls.Remove(this);
    d_.admission.Release(peer_);
    d_.batcher.StreamClosed();
    if (d_.metrics != nullptr) d_.metrics->SetStreams(d_.admission.open());
  }
  Unref();
}

void CallCore::Abort(const absl::Status& status) {
  cancel_->Cancel();
  MutexLock lock(mu_);
  FinishLocked(status);
}

void CallCore::FinishLocked(const absl::Status& status, std::optional<Rejection> reason,
                            bool cancel_jobs) {
  if (finished_) return;
  finished_ = true;
  if (!status.ok() && cancel_jobs) cancel_->Cancel();  // drop anything still queued
  if (d_.metrics != nullptr) {
    d_.metrics->Request(rpc_, status);
    if (!reason) {
      switch (status.code()) {
        case absl::StatusCode::kInvalidArgument:
          reason = Rejection::kInvalid;
          break;
        case absl::StatusCode::kNotFound:
          reason = Rejection::kVoiceNotFound;
          break;
        case absl::StatusCode::kDeadlineExceeded:
          reason = Rejection::kDeadline;
          break;
        default:
          break;
      }
    }
    if (reason) d_.metrics->Reject(*reason);
  }
  TransportFinish(status);
}

void CallCore::CountDeliveredLocked(size_t samples) {
  delivered_samples_ += static_cast<int64_t>(samples);
  if (d_.metrics != nullptr && samples > 0) {
    d_.metrics->AudioDelivered(static_cast<double>(samples) / d_.limits.sample_rate);
  }
}

absl::Status CallCore::SubmitLocked(model::VocodeJob job, const StreamSetup& setup) {
  Ref();  // the job's reference, dropped after JobDone
  std::unique_ptr<batcher::Job> j =
      std::make_unique<ModelJob>(std::move(job), setup.voice.fingerprint, setup.n_timesteps,
                                 stream_id_, deadline_, cancel_, this);
  absl::Status s = d_.batcher.Submit(&j);
  // Not the last reference: the caller runs inside a transport event or a
  // job completion, each of which holds one.
  if (!s.ok()) Unref();
  return s;
}

void CallCore::OnJobComplete(absl::Status status, const batcher::BatchInfo& info,
                             model::VocodeJob& job) {
  d_.executor.Post([this, status = std::move(status), info, job = std::move(job)]() mutable {
    JobDone(status, info, job);
    Unref();
  });
}

// ---- StreamCore ----

void StreamCore::Start() {
  MutexLock lock(mu_);
  if (!AdmitLocked()) return;
  last_activity_ = d_.clock.Now();
  TransportRead(&request_);
}

void StreamCore::ReadDone(bool ok) {
  MutexLock lock(mu_);
  if (finished_) return;
  if (!ok) {
    // A failed read is a half-close, unless the client cancelled or its
    // deadline passed (gRPC may fail the read before it reports the cancel).
    if (TransportCancelled() || DeadlinePassedLocked()) return FinishCancelledLocked();
    if (absl::Status s = validator_.EndOfInput(); !s.ok()) return FinishLocked(s);
    session_->EndInput();
    return AdvanceLocked();
  }
  last_activity_ = d_.clock.Now();
  if (absl::Status s = CheckRequestSize(request_.ByteSizeLong(), d_.limits); !s.ok()) {
    return FinishLocked(s);
  }
  if (absl::Status s = HandleLocked(); !s.ok()) return FinishLocked(s);
  AdvanceLocked();
  // Keep reading after the final chunk too: a chunk after it is a client
  // error worth reporting; the half-close that follows ends the reads.
  if (!finished_) TransportRead(&request_);
}

absl::Status StreamCore::HandleLocked() {
  auto m = validator_.Next(request_);
  if (!m.ok()) return m.status();
  if (m->is_config) {
    setup_ = std::move(m->setup);
    session_.emplace(d_.limits.Session(), setup_.voice.voice, PhaseFor(stream_id_));
    Write w;
    FillStarted(d_.limits, setup_, request_.config().request_id(), w.response.mutable_started());
    QueueWriteLocked(std::move(w));
    return absl::OkStatus();
  }
  session_->Append(m->tokens);
  last_seq_ = m->sequence_number;
  arrivals_.emplace_back(last_seq_, d_.clock.Now());
  if (m->is_final) session_->EndInput();
  return absl::OkStatus();
}

void StreamCore::WriteDone(bool ok) {
  MutexLock lock(mu_);
  write_pending_ = false;
  if (current_.audio) {
    --queued_audio_;
    queued_audio_bytes_ -= current_.response.audio().audio().size();
    if (ok) CountDeliveredLocked(current_.samples);
  }
  current_ = Write{};
  // Never write after the finish (a job error or a protocol error may finish
  // the stream while writes are queued): the queued ones are dropped.
  if (finished_) return;
  if (!ok) return FinishLocked(absl::CancelledError("client stopped reading"));
  if (!writes_.empty()) StartNextWriteLocked();
  AdvanceLocked();  // resumes a stream held back by backpressure
}

bool CallCore::JobEndedCallLocked(const absl::Status& status, const model::VocodeJob& job) {
  if (finished_) {
    if (status.ok()) {
      CountComputedLocked(static_cast<size_t>(job.mel.size() / d_.limits.mel_bins) *
                          static_cast<size_t>(d_.limits.samples_per_frame));
    }
    return true;
  }
  if (!status.ok()) {
    FinishLocked(status);
    return true;
  }
  return false;
}

void StreamCore::JobDone(const absl::Status& status, const batcher::BatchInfo& info,
                         model::VocodeJob& job) {
  MutexLock lock(mu_);
  if (JobEndedCallLocked(status, job)) return;
  const auto start = static_cast<uint64_t>(session_->samples_emitted());
  std::vector<float> audio = session_->Complete(job);
  timing_ = info;
  QueueAudioLocked(std::move(audio), start, job_seq_);
  AdvanceLocked();
}

void StreamCore::AdvanceLocked() {
  if (finished_ || !session_) return;
  // Backpressure: WriteDone calls back here when a write completes.
  if (queued_audio_ >= d_.limits.max_queued_audio) return;
  if (auto job = session_->NextJob()) {
    job_seq_ = last_seq_;
    ++jobs_submitted_;
    if (absl::Status s = SubmitLocked(std::move(*job), setup_); !s.ok()) FinishLocked(s);
    return;
  }
  if (session_->input_done() && !session_->in_flight() && !session_->finished()) {
    const auto start = static_cast<uint64_t>(session_->samples_emitted());
    QueueAudioLocked(session_->Flush(), start, last_seq_);
  }
  MaybeFinishLocked();
}

void StreamCore::QueueAudioLocked(std::vector<float> audio, uint64_t start, uint64_t seq) {
  const bool last = session_->finished();
  CountComputedLocked(audio.size());
  if (audio.empty() && !last) return;
  ObserveLatencyLocked(seq, audio.size());
  Write w;
  w.audio = true;
  w.samples = audio.size();
  v1::AudioChunk* a = w.response.mutable_audio();
  a->set_audio(EncodeAudio(audio, setup_.encoding));
  a->set_sequence_number(seq);
  a->set_start_sample(start);
  a->set_num_samples(static_cast<uint32_t>(audio.size()));
  a->set_is_final(last);
  FillTiming(timing_, w.response.mutable_timing());
  ++queued_audio_;
  queued_audio_bytes_ += a->audio().size();
  queued_audio_bytes_high_water_ = std::max(queued_audio_bytes_high_water_, queued_audio_bytes_);
  QueueWriteLocked(std::move(w));
}

// Chunk latency (arrival of the chunk that released this audio -> now) and,
// once, time to first audio (first chunk -> now).
void StreamCore::ObserveLatencyLocked(uint64_t seq, size_t samples) {
  if (d_.metrics == nullptr || samples == 0) return;
  const auto now = d_.clock.Now();
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

void StreamCore::QueueWriteLocked(Write w) {
  writes_.push_back(std::move(w));
  if (!write_pending_) StartNextWriteLocked();
}

void StreamCore::StartNextWriteLocked() {
  // A response over the message limit would be refused by the transport
  // (RESOURCE_EXHAUSTED to the client, a failed write here that looks like a
  // client that stopped reading). Refuse it here instead, counted under the
  // code the client is given. Only a small --max-message-bytes gets here: a
  // stream's responses are a job's audio (tens of tokens).
  const size_t bytes = writes_.front().response.ByteSizeLong();
  if (static_cast<int64_t>(bytes) > d_.limits.max_message_bytes) {
    const Write& w = writes_.front();
    return FinishLocked(absl::InvalidArgumentError(absl::StrCat(
        "an audio response of ", w.samples, " samples in ", AudioEncoding_Name(setup_.encoding),
        " is ", bytes, " bytes, over the ", d_.limits.max_message_bytes,
        "-byte message limit (--max-message-bytes); use PCM_S16LE (half the size) or a server "
        "with a larger limit")));
  }
  write_pending_ = true;
  current_ = std::move(writes_.front());
  writes_.pop_front();
  TransportWrite(&current_.response);
}

void StreamCore::MaybeFinishLocked() {
  if (session_ && session_->finished() && writes_.empty() && !write_pending_) {
    FinishLocked(absl::OkStatus());
  }
}

void StreamCore::CheckIdle(batcher::TimePoint now) {
  MutexLock lock(mu_);
  const auto limit = d_.limits.stream_idle_timeout;
  if (finished_ || limit <= batcher::Duration::zero()) return;
  if (validator_.input_done()) return;  // waiting on the server, not the client
  if (now - last_activity_ < limit) return;
  FinishLocked(absl::DeadlineExceededError(absl::StrCat(
                   "stream idle: no message for ",
                   std::chrono::duration_cast<std::chrono::seconds>(limit).count(),
                   " s while its input was open (--stream-idle-timeout-s); send chunks as they are "
                   "generated and end the utterance with is_final")),
               Rejection::kIdle);
}

int64_t StreamCore::jobs_submitted() const {
  MutexLock lock(mu_);
  return jobs_submitted_;
}

bool StreamCore::waiting_for_client() const {
  MutexLock lock(mu_);
  return session_ && !session_->in_flight() && write_pending_ &&
         (queued_audio_ >= d_.limits.max_queued_audio || session_->finished());
}

size_t StreamCore::queued_audio_bytes_high_water() const {
  MutexLock lock(mu_);
  return queued_audio_bytes_high_water_;
}

// ---- UnaryCore ----

void UnaryCore::Start(const v1::VocodeRequest& request, v1::VocodeResponse* response) {
  MutexLock lock(mu_);
  if (!AdmitLocked()) return;
  response_ = response;
  if (absl::Status s = CheckRequestSize(request.ByteSizeLong(), d_.limits); !s.ok()) {
    return FinishLocked(s);
  }
  auto plan = CheckUnary(d_.limits, d_.voices, request);
  if (!plan.ok()) return FinishLocked(plan.status());
  setup_ = std::move(plan->setup);
  SessionOptions one_piece = d_.limits.Session();  // the whole utterance is one row
  one_piece.max_new_tokens = d_.limits.max_row_tokens;
  session_.emplace(one_piece, setup_.voice.voice, PhaseFor(stream_id_));
  session_->Append(plan->tokens);
  session_->EndInput();
  FillStarted(d_.limits, setup_, request.config().request_id(), response_->mutable_format());
  auto job = session_->NextJob();
  if (!job) return FinishLocked(absl::OkStatus());  // no tokens: empty audio
  if (absl::Status s = SubmitLocked(std::move(*job), setup_); !s.ok()) FinishLocked(s);
}

void UnaryCore::JobDone(const absl::Status& status, const batcher::BatchInfo& info,
                        model::VocodeJob& job) {
  MutexLock lock(mu_);
  if (JobEndedCallLocked(status, job)) return;
  const std::vector<float> audio = session_->Complete(job);
  CountComputedLocked(audio.size());
  response_->set_audio(EncodeAudio(audio, setup_.encoding));
  FillTiming(info, response_->mutable_timing());
  CountDeliveredLocked(audio.size());  // the client is told OK with it
  FinishLocked(absl::OkStatus());
}

}  // namespace vocoder::server

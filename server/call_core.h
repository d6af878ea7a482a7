// The reactor core: everything a vocoding call (StreamVocode, Vocode) does
// between its transport and the batcher, with the transport behind an
// interface so that the concurrency logic runs under ThreadSanitizer and in
// unit tests without gRPC (server/service.cc adapts it to gRPC's callback
// reactors; tests/server/call_core_test.cc drives it with a fake transport).
//
// Threads: transport events (ReadDone, WriteDone, Cancelled, Done) arrive on
// the transport's threads, one at a time per kind but concurrently with each
// other; job completions arrive on the batcher's GPU thread and are handed to
// the Executor, whose threads run JobDone; the CallTracker's sweeper calls
// CheckIdle and Abort from its own thread. Every piece of call state is
// guarded by the call's mutex.
//
// Lifetime: a call is reference counted. The transport holds one reference
// from construction to Done(); every submitted job holds one until its
// completion has run; the tracker holds one while the call is open. The
// last Unref deletes the call.
#ifndef VOCODER_SERVER_CALL_CORE_H_
#define VOCODER_SERVER_CALL_CORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "batcher/batcher.h"
#include "server/admission.h"
#include "server/executor.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/model_job.h"
#include "server/request_validation.h"
#include "server/stream_session.h"
#include "server/sync.h"
#include "vocoder/v1/vocoder.pb.h"

namespace vocoder::server {

class CallCore;

// The open calls, for the idle sweep and for ending every call at once when
// the drain is cut short. Thread-safe.
class CallTracker {
 public:
  void Add(CallCore* call);
  void Remove(CallCore* call);
  // Finishes every stream whose input has been idle for the limit.
  void SweepIdle(batcher::TimePoint now);
  // Cancels every open call's queued jobs and finishes it with `status`.
  void AbortAll(const absl::Status& status);
  size_t size() const;
  // Open streams held back by their client (CallCore::waiting_for_client):
  // for tests that wait for backpressure to take hold.
  size_t WaitingForClient() const;

 private:
  template <typename F>
  void ForEach(F f);

  mutable Mutex mu_;
  std::set<CallCore*> calls_ ABSL_GUARDED_BY(mu_);
};

// What a call needs from the server. All references outlive every call.
struct EdgeDeps {
  batcher::Batcher& batcher;
  Executor& executor;
  ServingState& state;
  Admission& admission;
  CallTracker& calls;
  const batcher::Clock& clock;  // steady time: latency, idle timeout
  const EdgeLimits& limits;
  VoiceLookup voices;
  Metrics* metrics = nullptr;  // optional
};

// What both kinds of call share: admission, the batcher's open-stream count,
// job submission and completion, cancellation, an idempotent finish that
// counts the status the client is given, and the audio accounting (computed,
// delivered, and computed but never delivered).
//
// Invariants (under mu_):
//  - TransportFinish is called at most once (finished_ guards it), and
//    nothing is written or read after it.
//  - A call that was admitted releases its slot exactly once, in Done().
//  - Every job submitted is completed exactly once (the batcher's promise);
//    its reference keeps the call alive until then.
class CallCore : public JobCompletion {
 public:
  CallCore(const CallCore&) = delete;
  CallCore& operator=(const CallCore&) = delete;

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Transport events.
  // The client cancelled (or its deadline passed): queued jobs are dropped
  // and the call finishes with what the client saw (CANCELLED or
  // DEADLINE_EXCEEDED).
  void Cancelled();
  // The transport is done with the call: releases its slot, drops the
  // transport's reference.
  void Done();

  // From the tracker.
  virtual void CheckIdle(batcher::TimePoint /*now*/) {}
  void Abort(const absl::Status& status);

  // JobCompletion: hands the job to the executor (never blocks the GPU).
  void OnJobComplete(absl::Status status, const batcher::BatchInfo& info,
                     model::VocodeJob& job) final;

  bool finished() const;
  // True when the call submits nothing more until its client reads (only
  // streams hold back; see StreamCore).
  virtual bool waiting_for_client() const { return false; }

 protected:
  CallCore(const EdgeDeps& d, const char* rpc, std::string peer, batcher::TimePoint deadline);
  virtual ~CallCore();

  // Sends the final status. Called once, under mu_.
  virtual void TransportFinish(const absl::Status& status) = 0;
  // A finished job, on an executor thread, mu_ not held.
  virtual void JobDone(const absl::Status& status, const batcher::BatchInfo& info,
                       model::VocodeJob& job) = 0;

  // Refuses (and finishes) when draining, not ready or over a cap.
  bool AdmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes once with `status`, counted under its code and, for refusals,
  // `reason` (default: derived from the code). A non-OK status drops the
  // call's queued jobs unless `cancel_jobs` is false.
  void FinishLocked(const absl::Status& status, std::optional<Rejection> reason = std::nullopt,
                    bool cancel_jobs = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Submits a job whose completion comes back through JobDone.
  absl::Status SubmitLocked(model::VocodeJob job, const StreamSetup& setup)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishCancelledLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The client's deadline passed (within a small slack).
  bool DeadlinePassedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountComputedLocked(size_t samples) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    computed_samples_ += static_cast<int64_t>(samples);
  }
  void CountDeliveredLocked(size_t samples) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The common head of JobDone: a job that completes after the call finished
  // only counts as computed (undelivered) audio, and a failed job finishes the
  // call. True when either happened and the job needs no more handling.
  bool JobEndedCallLocked(const absl::Status& status, const model::VocodeJob& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const EdgeDeps d_;
  const char* const rpc_;
  const std::string peer_;
  const batcher::TimePoint deadline_;
  const std::shared_ptr<batcher::Cancellation> cancel_;
  mutable Mutex mu_;
  bool admitted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t stream_id_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t computed_samples_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t delivered_samples_ ABSL_GUARDED_BY(mu_) = 0;

 private:
  std::atomic<int> refs_{1};
};

// One StreamVocode stream. The transport implements Read/Write/Finish; the
// core turns messages into jobs and finished jobs into writes.
//
// Invariants (under mu_), beyond CallCore's:
//  - At most one write in flight (write_pending_); queued writes wait in
//    writes_ and none starts after the finish.
//  - Backpressure: at most limits.max_queued_audio audio responses are queued
//    or in flight; while that many are, no job is submitted (the next one is
//    submitted from WriteDone), so a client that does not read costs at most
//    that much audio plus one job in flight, whatever the utterance's length.
//  - At most one job in flight (the session's rule).
class StreamCore : public CallCore {
 public:
  // Transport events.
  void ReadDone(bool ok);
  void WriteDone(bool ok);

  void CheckIdle(batcher::TimePoint now) override;

  // For tests: jobs submitted so far; true when no job is in flight and the
  // stream waits for the client to read (backpressure or the end).
  int64_t jobs_submitted() const;
  bool waiting_for_client() const override;
  size_t queued_audio_bytes_high_water() const;

 protected:
  StreamCore(const EdgeDeps& d, std::string peer, batcher::TimePoint deadline)
      : CallCore(d, "StreamVocode", std::move(peer), deadline) {}
  // Admission and the first read; call at the end of the derived constructor.
  void Start();

  virtual void TransportRead(v1::StreamVocodeRequest* request) = 0;
  virtual void TransportWrite(const v1::StreamVocodeResponse* response) = 0;
  // True when the transport saw the client cancel (a failed read is then not
  // a half-close).
  virtual bool TransportCancelled() const = 0;

 private:
  struct Write {
    v1::StreamVocodeResponse response;
    size_t samples = 0;  // audio samples carried
    bool audio = false;
  };

  void JobDone(const absl::Status& status, const batcher::BatchInfo& info,
               model::VocodeJob& job) override;
  absl::Status HandleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueAudioLocked(std::vector<float> audio, uint64_t start, uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ObserveLatencyLocked(uint64_t seq, size_t samples) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueWriteLocked(Write w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  StreamValidator validator_ ABSL_GUARDED_BY(mu_){d_.limits, d_.voices};
  v1::StreamVocodeRequest request_ ABSL_GUARDED_BY(mu_);
  Write current_ ABSL_GUARDED_BY(mu_);
  bool write_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Write> writes_ ABSL_GUARDED_BY(mu_);
  int queued_audio_ ABSL_GUARDED_BY(mu_) = 0;  // audio responses queued or in flight
  size_t queued_audio_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t queued_audio_bytes_high_water_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t jobs_submitted_ ABSL_GUARDED_BY(mu_) = 0;
  StreamSetup setup_ ABSL_GUARDED_BY(mu_);
  std::optional<StreamSession> session_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t job_seq_ ABSL_GUARDED_BY(mu_) = 0;
  batcher::TimePoint last_activity_ ABSL_GUARDED_BY(mu_){};
  batcher::BatchInfo timing_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<uint64_t, batcher::TimePoint>> arrivals_ ABSL_GUARDED_BY(mu_);
  bool first_audio_sent_ ABSL_GUARDED_BY(mu_) = false;
};

// One unary Vocode call: validated whole (including the response's size),
// one job, one response.
class UnaryCore : public CallCore {
 protected:
  UnaryCore(const EdgeDeps& d, std::string peer, batcher::TimePoint deadline)
      : CallCore(d, "Vocode", std::move(peer), deadline) {}
  // Admission, validation and the job; call at the end of the derived
  // constructor. `response` must stay valid until the finish.
  void Start(const v1::VocodeRequest& request, v1::VocodeResponse* response);

 private:
  void JobDone(const absl::Status& status, const batcher::BatchInfo& info,
               model::VocodeJob& job) override;

  v1::VocodeResponse* response_ ABSL_GUARDED_BY(mu_) = nullptr;
  StreamSetup setup_ ABSL_GUARDED_BY(mu_);
  std::optional<StreamSession> session_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_CALL_CORE_H_

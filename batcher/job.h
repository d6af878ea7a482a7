// A unit of work for the batcher: one chunk of one stream. The batcher sees
// only what it needs to schedule (key, cost, deadline, stream, cancellation)
// and a completion; the payload (tokens, voice tensors, outputs) lives in a
// subclass that the submitter and the BatchRunner agree on.
#ifndef VOCODER_BATCHER_JOB_H_
#define VOCODER_BATCHER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "batcher/clock.h"
#include "batcher/mpsc_queue.h"

namespace vocoder::batcher {

// A 128-bit content fingerprint (of a voice's conditioning tensors). Equal
// content gives equal fingerprints whatever object or name carries it: the fix
// for the design note's id(ref_dict) grouping.
struct Fingerprint {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
  friend auto operator<=>(const Fingerprint&, const Fingerprint&) = default;
  std::string ToHex() const;
};

// Fingerprint of raw bytes (64-bit FNV-1a and a second, differently seeded
// mixing pass; not cryptographic: voices are trusted once registered).
Fingerprint FingerprintBytes(const void* data, size_t size, Fingerprint seed = {});

// Jobs batch together only when their keys allow it: same `compat` always
// (n_timesteps: one ODE schedule per batch), and same `voice` in voice mode.
struct BatchKey {
  Fingerprint voice;
  uint32_t compat = 0;
  friend bool operator==(const BatchKey&, const BatchKey&) = default;
  friend auto operator<=>(const BatchKey&, const BatchKey&) = default;
};

// Shared by all jobs of one stream; the stream's RPC handler sets it when the
// client goes away. Thread-safe.
class Cancellation {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_release); }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> cancelled_{false};
};

// How a job's batch went, for the job's completion (server timing fields).
enum class Trigger : uint8_t {
  kFull,      // max_batch_size jobs or max_batch_tokens reached
  kNearFull,  // fill >= early_fire_fraction
  kAllReady,  // every active stream has a job waiting
  kIdle,      // no arrival for idle_grace while the GPU is idle
  kMaxWait,   // the oldest job waited max_wait
  kDeadline,  // earliest deadline minus predicted run time reached
  kDrain,     // shutdown flushes what is queued
  kJoin,      // step scheduling: joined a running set at a step boundary
};
inline constexpr int kNumTriggers = 8;
const char* TriggerName(Trigger trigger);

// Batch scheduling: the job's batch. Step scheduling (Scheduling::kStep):
// queue_wait = submit -> admission, compute = admission -> retired (encoder,
// its steps beside other rows, HiFT), batch_size = running rows right after
// its admission (itself included), trigger = what started an empty running
// set (the batch triggers), kJoin for a job that joined running rows, kDrain
// while shutting down.
struct BatchInfo {
  Duration queue_wait{};  // submit -> batch start (step: admission)
  Duration compute{};     // the batch's run time (step: admission -> retired)
  int batch_size = 0;     // jobs in the batch (step: running rows at admission)
  Trigger trigger = Trigger::kIdle;
};

// Base class of everything submitted. Owned by the batcher from a successful
// Submit() until Complete() returns, then destroyed by it.
class Job {
 public:
  Job(BatchKey key, uint64_t stream_id, int64_t cost, TimePoint deadline,
      std::shared_ptr<const Cancellation> cancellation)
      : key_(key),
        stream_id_(stream_id),
        cost_(cost),
        deadline_(deadline),
        cancellation_(std::move(cancellation)) {}
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Called exactly once, on the batcher's thread, with OK after the runner
  // filled this job's outputs, or with why it did not run: DeadlineExceeded
  // (deadline passed before the GPU), Cancelled, Unavailable (shut down), or
  // the runner's error. Must not block: hand the result to the stream (e.g.
  // queue a write) and return.
  virtual void Complete(absl::Status status, const BatchInfo& info) = 0;

  const BatchKey& key() const { return key_; }
  uint64_t stream_id() const { return stream_id_; }
  // Padded length in tokens (prompt + context + new tokens): what a row costs.
  int64_t cost() const { return cost_; }
  TimePoint deadline() const { return deadline_; }
  bool cancelled() const { return cancellation_ != nullptr && cancellation_->cancelled(); }
  TimePoint enqueued() const { return enqueued_; }

 private:
  friend class Batcher;

  struct Node : MpscNode {
    Job* job = nullptr;
  };
  Node node_;  // links the job into the submit queue; no allocation on Submit
  BatchKey key_;
  uint64_t stream_id_;
  int64_t cost_;
  TimePoint deadline_;
  std::shared_ptr<const Cancellation> cancellation_;
  TimePoint enqueued_{};
  // Step scheduling: it ran out of device memory beside running rows, so it
  // is admitted only into an empty running set (GPU thread only).
  bool step_alone_ = false;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_JOB_H_

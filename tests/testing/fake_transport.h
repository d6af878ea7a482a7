// Test doubles for the reactor core (server/call_core.h) without gRPC: a fake
// transport that plays a client (reads, writes, half-close, cancel, gRPC's
// "OnDone after the last operation" rule) on its own thread, and a model
// runner that fills jobs with outputs of the model's shapes (no torch).
// (std::mutex, not absl::Mutex: TSan sees only the former.)
#ifndef VOCODER_TESTS_TESTING_FAKE_TRANSPORT_H_
#define VOCODER_TESTS_TESTING_FAKE_TRANSPORT_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "batcher/batcher.h"
#include "server/call_core.h"
#include "server/model_job.h"

namespace vocoder::testing {

// Runs ModelJobs as the model would shape their outputs: F = 2 x (tokens -
// context - 3 lookahead) emitted mel frames, audio and source of 480 x (K +
// F) samples where K is the mel cache's frames. Streams listed in fail_from
// fail from their n-th job on (0-based).
class ShapeRunner final : public batcher::BatchRunner {
 public:
  absl::Status Run(absl::Span<batcher::Job* const> jobs) override {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return !blocked_; });
    for (batcher::Job* j : jobs) {
      const int n = runs_[j->stream_id()]++;
      auto it = fail_from_.find(j->stream_id());
      if (it != fail_from_.end() && n >= it->second) {
        return absl::InternalError("injected model failure");
      }
    }
    ++batches_;
    lock.unlock();
    for (batcher::Job* j : jobs) {
      model::VocodeJob& v = static_cast<server::ModelJob*>(j)->vocode();
      const int64_t frames = 2 * (static_cast<int64_t>(v.tokens.size()) - v.context_tokens - 3);
      const int64_t cache = static_cast<int64_t>(v.mel_cache.size()) / 80;
      v.mel.assign(static_cast<size_t>(frames * 80), 0.5f);
      v.audio.assign(static_cast<size_t>(480 * (cache + frames)), 0.25f);
      v.source.assign(v.audio.size(), 0.0f);
    }
    return absl::OkStatus();
  }
  void FailFrom(uint64_t stream, int nth_job) {
    std::lock_guard lock(mu_);
    fail_from_[stream] = nth_job;
  }
  void Block() {
    std::lock_guard lock(mu_);
    blocked_ = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      blocked_ = false;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint64_t, int> runs_;
  std::map<uint64_t, int> fail_from_;
  bool blocked_ = false;
  int batches_ = 0;
};

// What the client of one fake call saw. Outlives the call.
struct ClientView {
  bool finished = false;
  bool done = false;
  absl::Status status;
  bool started = false;
  int64_t audio_samples = 0;  // from audio responses it read
  bool saw_final = false;
  int writes_after_finish = 0;
  int reads_after_finish = 0;
  size_t largest_write_bytes = 0;  // serialized, of every write started
};

class FakeStreamCall;

// The StreamCore with its transport methods forwarded to the harness.
class FakeStream final : public server::StreamCore {
 public:
  FakeStream(const server::EdgeDeps& d, batcher::TimePoint deadline, const std::string& peer,
             FakeStreamCall* call)
      : StreamCore(d, peer, deadline), call_(call) {}
  void Begin() { Start(); }

 private:
  void TransportRead(v1::StreamVocodeRequest* request) override;
  void TransportWrite(const v1::StreamVocodeResponse* response) override;
  bool TransportCancelled() const override;
  void TransportFinish(const absl::Status& status) override;

  FakeStreamCall* const call_;
};

// One StreamVocode call and its client. The client thread completes writes
// (when reading), fails what is pending after a cancel, and calls Done once
// the call finished and nothing is pending, as gRPC does.
class FakeStreamCall {
 public:
  FakeStreamCall(const server::EdgeDeps& d, bool reading,
                 batcher::TimePoint deadline = batcher::kNever,
                 const std::string& peer = "ipv4:127.0.0.1")
      : reading_(reading) {
    stream_ = new FakeStream(d, deadline, peer, this);
    stream_->Ref();  // the test's own reference, for introspection
    stream_->Begin();
    client_ = std::thread([this] { Client(); });
  }
  ~FakeStreamCall() {
    WaitDone();
    client_.join();
    stream_->Unref();
  }

  // Delivers a message when the call has a read pending; false if the call
  // finished first.
  bool Send(const v1::StreamVocodeRequest& r) {
    v1::StreamVocodeRequest* target = nullptr;
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] { return read_ != nullptr || view_.finished || cancelled_; });
      if (read_ == nullptr || cancelled_) return false;
      target = std::exchange(read_, nullptr);
    }
    *target = r;
    stream_->ReadDone(true);
    return true;
  }
  void HalfClose() {
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] { return read_ != nullptr || view_.finished || cancelled_; });
      if (read_ == nullptr || cancelled_) return;
      read_ = nullptr;
    }
    stream_->ReadDone(false);
  }
  // The client cancels: OnCancel, then pending operations fail.
  void Cancel() {
    {
      std::lock_guard lock(mu_);
      cancelled_ = true;
    }
    changed_.notify_all();
    stream_->Cancelled();
  }
  // A cancel as gRPC sometimes orders it: the pending read fails first.
  void CancelReadFirst() {
    v1::StreamVocodeRequest* target = nullptr;
    {
      std::unique_lock lock(mu_);
      cancelled_ = true;
      target = std::exchange(read_, nullptr);
    }
    if (target != nullptr) stream_->ReadDone(false);
    stream_->Cancelled();
    changed_.notify_all();
  }
  void StartReading() {
    {
      std::lock_guard lock(mu_);
      reading_ = true;
    }
    changed_.notify_all();
  }
  ClientView WaitFinished() {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return view_.finished; });
    return view_;
  }
  ClientView WaitDone() {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return view_.done; });
    return view_;
  }
  ClientView view() const {
    std::lock_guard lock(mu_);
    return view_;
  }
  FakeStream& stream() { return *stream_; }

  // Transport side (called by FakeStream, possibly under the call's lock).
  void OnRead(v1::StreamVocodeRequest* r) {
    std::lock_guard lock(mu_);
    if (view_.finished) ++view_.reads_after_finish;
    read_ = r;
    changed_.notify_all();
  }
  void OnWrite(const v1::StreamVocodeResponse* w) {
    std::lock_guard lock(mu_);
    if (view_.finished) ++view_.writes_after_finish;
    view_.largest_write_bytes = std::max(view_.largest_write_bytes, w->ByteSizeLong());
    write_ = w;
    changed_.notify_all();
  }
  void OnFinish(const absl::Status& s) {
    std::lock_guard lock(mu_);
    view_.finished = true;
    view_.status = s;
    changed_.notify_all();
  }
  bool cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
  }

 private:
  void Client() {
    std::unique_lock lock(mu_);
    while (true) {
      changed_.wait(lock, [&] {
        return (write_ != nullptr && (reading_ || cancelled_)) ||
               (view_.finished && read_ != nullptr) || (view_.finished && write_ == nullptr);
      });
      if (write_ != nullptr && (reading_ || cancelled_)) {
        const v1::StreamVocodeResponse* w = std::exchange(write_, nullptr);
        const bool ok = !cancelled_;
        if (ok) {
          if (w->has_started()) view_.started = true;
          if (w->has_audio()) {
            view_.audio_samples += w->audio().num_samples();
            if (w->audio().is_final()) view_.saw_final = true;
          }
        }
        lock.unlock();
        stream_->WriteDone(ok);
        lock.lock();
        continue;
      }
      if (view_.finished && read_ != nullptr) {  // the read pending at the finish fails
        read_ = nullptr;
        lock.unlock();
        stream_->ReadDone(false);
        lock.lock();
        continue;
      }
      if (view_.finished && write_ == nullptr) break;
    }
    lock.unlock();
    stream_->Done();
    lock.lock();
    view_.done = true;
    changed_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable changed_;
  FakeStream* stream_ = nullptr;
  bool reading_;
  bool cancelled_ = false;
  v1::StreamVocodeRequest* read_ = nullptr;
  const v1::StreamVocodeResponse* write_ = nullptr;
  ClientView view_;
  std::thread client_;
};

inline void FakeStream::TransportRead(v1::StreamVocodeRequest* r) { call_->OnRead(r); }
inline void FakeStream::TransportWrite(const v1::StreamVocodeResponse* w) { call_->OnWrite(w); }
inline bool FakeStream::TransportCancelled() const { return call_->cancelled(); }
inline void FakeStream::TransportFinish(const absl::Status& s) { call_->OnFinish(s); }

// A unary call with a fake transport.
class FakeUnary final : public server::UnaryCore {
 public:
  struct Result {
    std::mutex mu;
    std::condition_variable changed;
    bool finished = false;
    absl::Status status;
  };
  FakeUnary(const server::EdgeDeps& d, Result* result)
      : UnaryCore(d, "ipv4:127.0.0.1", batcher::kNever), result_(result) {}
  void Begin(const v1::VocodeRequest& request) { Start(request, &response_); }
  const v1::VocodeResponse& response() const { return response_; }

 private:
  void TransportFinish(const absl::Status& s) override {
    {
      std::lock_guard lock(result_->mu);
      result_->finished = true;
      result_->status = s;
    }
    result_->changed.notify_all();
  }
  Result* const result_;
  v1::VocodeResponse response_;
};

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_FAKE_TRANSPORT_H_

// The reactor core without gRPC (server/call_core.h): a fake transport plays
// each client on its own thread, a shape-only runner stands in for the model,
// the real batcher and executor run the jobs, and an injected clock drives
// idle timeouts and deadlines. Runs under ThreadSanitizer (scripts/test).
#include "server/call_core.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_transport.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::ClientView;
using vocoder::testing::FakeStreamCall;
using vocoder::testing::FakeUnary;
using vocoder::testing::ShapeRunner;

// Polls a state the test waits for (no sleeps, no timing assertions); false
// after a minute, which only a hang reaches.
template <typename P>
bool Eventually(P predicate) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

v1::StreamVocodeRequest Config(v1::AudioEncoding enc = v1::PCM_F32LE,
                               const std::string& voice = "alice") {
  v1::StreamVocodeRequest r;
  r.mutable_config()->set_voice_id(voice);
  r.mutable_config()->set_encoding(enc);
  return r;
}

v1::StreamVocodeRequest Chunk(uint64_t seq, int tokens, bool final) {
  v1::StreamVocodeRequest r;
  for (int i = 0; i < tokens; ++i)
    r.mutable_chunk()->add_tokens(static_cast<uint32_t>(i * 7 % 6561));
  r.mutable_chunk()->set_sequence_number(seq);
  r.mutable_chunk()->set_is_final(final);
  return r;
}

// Config, then `tokens` in chunks of `chunk`, the last one final.
bool SendUtterance(FakeStreamCall& call, int tokens, int chunk = 20,
                   v1::AudioEncoding enc = v1::PCM_F32LE) {
  if (!call.Send(Config(enc))) return false;
  uint64_t seq = 0;
  for (int sent = 0; sent < tokens; sent += chunk) {
    const int n = std::min(chunk, tokens - sent);
    if (!call.Send(Chunk(seq++, n, sent + n >= tokens))) return false;
  }
  return true;
}

class CallCoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(); }
  void TearDown() override { Stop(); }

  void Build(int max_streams = 64, int per_peer = 0) {
    state_.ready.store(true);
    limits_.max_tokens_per_chunk = 100;
    limits_.max_tokens_per_utterance = 7500;
    limits_.stream_idle_timeout = std::chrono::seconds(30);
    admission_ = std::make_unique<Admission>(state_, max_streams, per_peer);
    batcher::BatcherOptions o;
    o.max_batch_size = 8;
    o.idle_grace = std::chrono::microseconds(0);
    o.max_wait = std::chrono::microseconds(200);
    auto b = batcher::Batcher::Create(o, {system_clock_, runner_, &metrics_});
    ASSERT_TRUE(b.ok()) << b.status();
    batcher_ = std::move(*b);
    executor_ = std::make_unique<Executor>(2);
    auto voice = std::make_shared<model::Voice>();
    voice->data.prompt_tokens.assign(10, 1);
    alice_ = VoiceEntry{"alice", "Alice", 0, batcher::Fingerprint{1, 2}, 10, voice};
    deps_.emplace(EdgeDeps{*batcher_, *executor_, state_, *admission_, tracker_, clock_, limits_,
                           [this](const std::string& id) -> absl::StatusOr<VoiceEntry> {
                             if (id == "alice") return alice_;
                             return absl::NotFoundError("voice '" + id + "' is not registered");
                           },
                           &metrics_});
  }
  void Stop() {
    if (batcher_ == nullptr) return;
    batcher_->Shutdown(batcher::Batcher::ShutdownMode::kFailQueued);
    executor_.reset();  // runs the last completions
    EXPECT_EQ(admission_->open(), 0) << "a call kept its slot";
    EXPECT_EQ(tracker_.size(), 0u);
    batcher_.reset();
  }

  double Count(const std::string& name, const std::string& label = "",
               const std::string& value = "") {
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      double sum = 0;
      for (const auto& m : family.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match = match || (l.name == label && l.value == value);
        if (match) sum += m.counter.value;
      }
      return sum;
    }
    return -1;
  }
  double Requests(const std::string& code) { return Count("vocoder_requests_total", "code", code); }
  double Rejections(const std::string& reason) {
    return Count("vocoder_rejections_total", "reason", reason);
  }

  ServingState state_;
  EdgeLimits limits_;
  std::unique_ptr<Admission> admission_;
  CallTracker tracker_;
  vocoder::testing::FakeClock clock_;
  batcher::SystemClock system_clock_;  // the batcher's timing is not the subject here
  ShapeRunner runner_;
  prometheus::Registry registry_;
  Metrics metrics_{registry_, MetricsInfo{}};
  std::unique_ptr<batcher::Batcher> batcher_;
  std::unique_ptr<Executor> executor_;
  VoiceEntry alice_;
  std::optional<EdgeDeps> deps_;
};

TEST_F(CallCoreTest, StreamDeliversEveryTokensAudioOnceAndCountsIt) {
  FakeStreamCall call(*deps_, /*reading=*/true);
  ASSERT_TRUE(SendUtterance(call, 137));
  const ClientView v = call.WaitDone();
  ASSERT_TRUE(v.status.ok()) << v.status;
  EXPECT_TRUE(v.started);
  EXPECT_TRUE(v.saw_final);
  EXPECT_EQ(v.audio_samples, 137 * 960);
  EXPECT_EQ(Requests("OK"), 1);
  EXPECT_DOUBLE_EQ(Count("vocoder_audio_seconds_total"), 137 * 960 / 24000.0);
  EXPECT_EQ(Count("vocoder_audio_undelivered_seconds_total"), 0);
}

// Item 1: a client that sends its utterance and never reads costs at most
// max_queued_audio audio responses and one job; readers beside it finish;
// once it reads, it gets all of its audio.
TEST_F(CallCoreTest, NonReadersAreHeldToABoundAndGetTheirAudioWhenTheyRead) {
  constexpr int kTokens = 400;  // 20 chunks of 20: about 20 jobs if nothing holds it back
  std::vector<std::unique_ptr<FakeStreamCall>> non_readers;
  std::vector<std::unique_ptr<FakeStreamCall>> readers;
  for (int i = 0; i < 4; ++i) {
    non_readers.push_back(std::make_unique<FakeStreamCall>(*deps_, /*reading=*/false));
    readers.push_back(std::make_unique<FakeStreamCall>(*deps_, /*reading=*/true));
  }
  std::vector<std::thread> senders;
  for (int i = 0; i < 4; ++i) {
    senders.emplace_back([&, i] { EXPECT_TRUE(SendUtterance(*non_readers[i], kTokens)); });
    senders.emplace_back([&, i] { EXPECT_TRUE(SendUtterance(*readers[i], kTokens)); });
  }
  for (auto& t : senders) t.join();
  for (auto& r : readers) {
    const ClientView v = r->WaitDone();
    EXPECT_TRUE(v.status.ok()) << v.status;
    EXPECT_EQ(v.audio_samples, kTokens * 960);
  }
  // The stated bound: max_queued_audio responses of at most one job's audio
  // (50 new tokens, or the last job's 57), F32.
  const size_t bound = static_cast<size_t>(limits_.max_queued_audio) * 57 * 960 * 4;
  for (auto& n : non_readers) {
    ASSERT_TRUE(Eventually([&] { return n->stream().waiting_for_client(); }));
    EXPECT_LE(n->stream().jobs_submitted(), limits_.max_queued_audio + 1)
        << "a client that does not read kept the GPU busy";
    EXPECT_LE(n->stream().queued_audio_bytes_high_water(), bound);
    EXPECT_FALSE(n->view().finished);
  }
  for (auto& n : non_readers) n->StartReading();
  for (auto& n : non_readers) {
    const ClientView v = n->WaitDone();
    EXPECT_TRUE(v.status.ok()) << v.status;
    EXPECT_EQ(v.audio_samples, kTokens * 960);
    EXPECT_LE(n->stream().queued_audio_bytes_high_water(), bound);
  }
  EXPECT_EQ(Requests("OK"), 8);
}

// Item 2: the stream finishes (a job fails) while writes are queued behind a
// slow reader; when the reader catches up, no write starts after the finish.
TEST_F(CallCoreTest, NoWriteStartsAfterTheFinishWhenAJobFailsBehindASlowReader) {
  FakeStreamCall call(*deps_, /*reading=*/false);
  runner_.FailFrom(/*stream=*/1, /*nth_job=*/1);  // the first stream's second job fails
  ASSERT_TRUE(call.Send(Config()));
  ASSERT_TRUE(call.Send(Chunk(0, 40, false)));
  ASSERT_TRUE(call.Send(Chunk(1, 40, true)));
  const ClientView finished = call.WaitFinished();
  EXPECT_EQ(finished.status.code(), absl::StatusCode::kInternal) << finished.status;
  call.StartReading();  // the slow reader catches up
  const ClientView v = call.WaitDone();
  EXPECT_EQ(v.writes_after_finish, 0);
  EXPECT_EQ(v.reads_after_finish, 0);
  EXPECT_EQ(Requests("INTERNAL"), 1);
}

// A stream response over the message limit (F32 audio under a small
// --max-message-bytes) is refused before the transport would reject it, and
// counted under the code the client is given, not as CANCELLED; an S16 stream
// whose responses fit runs to the end.
TEST_F(CallCoreTest, OversizeAudioResponseIsRefusedAndCountedWithItsCode) {
  // A 20-token utterance in one final chunk is one job: at most 20 x 960
  // samples in all, 76.8 kB in F32 (its first audio response alone is over
  // 48 KiB) and at most 38.4 kB in S16.
  limits_.max_message_bytes = 48 << 10;
  {
    FakeStreamCall call(*deps_, /*reading=*/true);
    ASSERT_TRUE(SendUtterance(call, 20, /*chunk=*/20, v1::PCM_F32LE));
    const ClientView v = call.WaitDone();
    EXPECT_EQ(v.status.code(), absl::StatusCode::kInvalidArgument) << v.status;
    EXPECT_THAT(std::string(v.status.message()), HasSubstr("--max-message-bytes"));
    EXPECT_THAT(std::string(v.status.message()), HasSubstr("PCM_S16LE"));
    EXPECT_LE(v.largest_write_bytes, static_cast<size_t>(limits_.max_message_bytes));
    EXPECT_EQ(v.audio_samples, 0);
  }
  EXPECT_EQ(Requests("INVALID_ARGUMENT"), 1);
  EXPECT_EQ(Requests("CANCELLED"), 0);
  {
    FakeStreamCall call(*deps_, /*reading=*/true);
    ASSERT_TRUE(SendUtterance(call, 20, /*chunk=*/20, v1::PCM_S16LE));
    const ClientView v = call.WaitDone();
    EXPECT_TRUE(v.status.ok()) << v.status;
    EXPECT_EQ(v.audio_samples, 20 * 960);
    EXPECT_LE(v.largest_write_bytes, static_cast<size_t>(limits_.max_message_bytes));
  }
  EXPECT_EQ(Requests("OK"), 1);
}

// A request message over --max-message-bytes that the transport let through
// (it accepts up to twice the limit) is refused with INVALID_ARGUMENT naming
// the limit and counted with that code, not as CANCELLED: stream and unary.
TEST_F(CallCoreTest, OversizeRequestMessageIsRefusedAndCountedWithItsCode) {
  limits_.max_message_bytes = 600;
  {
    FakeStreamCall call(*deps_, /*reading=*/true);
    ASSERT_TRUE(call.Send(Config()));
    auto big = Chunk(0, 400, false);  // 400 token ids of 2 bytes each: over 600 bytes
    ASSERT_GT(big.ByteSizeLong(), 600u);
    ASSERT_LE(static_cast<int64_t>(big.ByteSizeLong()), 2 * limits_.max_message_bytes);
    call.Send(big);
    const ClientView v = call.WaitDone();
    EXPECT_EQ(v.status.code(), absl::StatusCode::kInvalidArgument) << v.status;
    EXPECT_THAT(std::string(v.status.message()), HasSubstr("--max-message-bytes"));
  }
  {
    FakeUnary::Result result;
    v1::VocodeRequest req;
    req.mutable_config()->set_voice_id("alice");
    for (int i = 0; i < 400; ++i) req.add_tokens(5000);
    auto* call = new FakeUnary(*deps_, &result);
    call->Begin(req);
    {
      std::unique_lock lock(result.mu);
      result.changed.wait(lock, [&] { return result.finished; });
    }
    call->Done();
    EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument) << result.status;
    EXPECT_THAT(std::string(result.status.message()), HasSubstr("--max-message-bytes"));
  }
  EXPECT_EQ(Requests("INVALID_ARGUMENT"), 2);
  EXPECT_EQ(Requests("CANCELLED"), 0);
  EXPECT_EQ(batcher_->stats().submitted, 0);
}

// Item 8: a stream that sends its config and then nothing is finished after
// the idle timeout with a clear status, counted; one still sending is not.
TEST_F(CallCoreTest, IdleStreamIsFinishedCountedAndReleasesItsSlot) {
  FakeStreamCall idle(*deps_, /*reading=*/true);
  FakeStreamCall busy(*deps_, /*reading=*/true);
  ASSERT_TRUE(idle.Send(Config()));
  ASSERT_TRUE(busy.Send(Config()));
  clock_.Advance(std::chrono::seconds(29));
  ASSERT_TRUE(busy.Send(Chunk(0, 10, false)));
  tracker_.SweepIdle(clock_.Now());
  EXPECT_FALSE(idle.view().finished);
  clock_.Advance(std::chrono::seconds(2));  // idle: 31 s; busy: 2 s since its chunk
  tracker_.SweepIdle(clock_.Now());
  const ClientView v = idle.WaitDone();
  EXPECT_EQ(v.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(v.status.message()), HasSubstr("--stream-idle-timeout-s"));
  EXPECT_FALSE(busy.view().finished);
  EXPECT_EQ(Rejections("idle"), 1);
  EXPECT_EQ(admission_->open(), 1);
  ASSERT_TRUE(busy.Send(Chunk(1, 10, true)));
  EXPECT_TRUE(busy.WaitDone().status.ok());
}

// Item 10: a cancel before the config is the client's cancel, not an invalid
// request; a call ended by the client's deadline is counted as
// DEADLINE_EXCEEDED with a deadline rejection.
TEST_F(CallCoreTest, CancelsAndDeadlinesAreCountedAsTheClientSawThem) {
  {
    FakeStreamCall call(*deps_, /*reading=*/true);
    call.CancelReadFirst();
    EXPECT_EQ(call.WaitDone().status.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_EQ(Requests("CANCELLED"), 1);
  EXPECT_EQ(Requests("INVALID_ARGUMENT"), 0);
  EXPECT_EQ(Rejections("invalid"), 0);
  {
    FakeStreamCall call(*deps_, /*reading=*/true, clock_.Now() + std::chrono::seconds(1));
    ASSERT_TRUE(call.Send(Config()));
    clock_.Advance(std::chrono::seconds(2));
    call.Cancel();  // gRPC cancels the call when the deadline passes
    EXPECT_EQ(call.WaitDone().status.code(), absl::StatusCode::kDeadlineExceeded);
  }
  EXPECT_EQ(Requests("DEADLINE_EXCEEDED"), 1);
  EXPECT_EQ(Rejections("deadline"), 1);
  {
    // gRPC's timer may fire just before the deadline as this side computed it.
    FakeStreamCall call(*deps_, /*reading=*/true, clock_.Now() + std::chrono::milliseconds(20));
    ASSERT_TRUE(call.Send(Config()));
    call.Cancel();
    EXPECT_EQ(call.WaitDone().status.code(), absl::StatusCode::kDeadlineExceeded);
  }
  {
    FakeStreamCall call(*deps_, /*reading=*/true, clock_.Now() + std::chrono::seconds(10));
    ASSERT_TRUE(call.Send(Config()));
    call.Cancel();  // well before its deadline: the client cancelled
    EXPECT_EQ(call.WaitDone().status.code(), absl::StatusCode::kCancelled);
  }
  {
    // The deadline passed before the config; gRPC failed the read first.
    FakeStreamCall call(*deps_, /*reading=*/true, clock_.Now() + std::chrono::milliseconds(1));
    clock_.Advance(std::chrono::milliseconds(5));
    call.HalfClose();
    EXPECT_EQ(call.WaitDone().status.code(), absl::StatusCode::kDeadlineExceeded);
  }
  EXPECT_EQ(Requests("DEADLINE_EXCEEDED"), 3);
  EXPECT_EQ(Requests("CANCELLED"), 2);
  EXPECT_EQ(Requests("INVALID_ARGUMENT"), 0);
}

// Item 10: audio counts when it reaches the client; audio computed for a
// client that left is its own series.
TEST_F(CallCoreTest, AudioIsCountedWhenDeliveredAndWasteSeparately) {
  {
    FakeStreamCall call(*deps_, /*reading=*/false);
    ASSERT_TRUE(SendUtterance(call, 200));
    ASSERT_TRUE(Eventually([&] { return call.stream().waiting_for_client(); }));
    call.Cancel();
    call.WaitDone();
  }
  Stop();  // every job completed and the call is gone: its accounting is final
  EXPECT_EQ(Count("vocoder_audio_seconds_total"), 0);
  EXPECT_GT(Count("vocoder_audio_undelivered_seconds_total"), 0);
}

// Item 9: ending the drain early finishes every open call with UNAVAILABLE;
// the jobs it had queued complete (with an error) and nothing hangs.
TEST_F(CallCoreTest, AbortAllFinishesOpenCallsWithUnavailable) {
  runner_.Block();
  FakeStreamCall a(*deps_, /*reading=*/true);
  FakeStreamCall b(*deps_, /*reading=*/false);
  ASSERT_TRUE(SendUtterance(a, 100));
  ASSERT_TRUE(b.Send(Config()));
  tracker_.AbortAll(absl::UnavailableError("server is shutting down"));
  runner_.Release();
  b.StartReading();
  EXPECT_EQ(a.WaitDone().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(b.WaitDone().status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Requests("UNAVAILABLE"), 2);
}

// Item 7: a unary response over the message limit is refused before any
// work, naming the limit and the streaming RPC.
TEST_F(CallCoreTest, UnaryResponseOverTheMessageLimitIsRefusedBeforeComputing) {
  FakeUnary::Result result;
  v1::VocodeRequest req;
  req.mutable_config()->set_voice_id("alice");
  req.mutable_config()->set_encoding(v1::PCM_F32LE);
  for (int i = 0; i < 1200; ++i) req.add_tokens(5);  // 1200 x 960 x 4 B = 4.6 MB > 4 MiB
  auto* call = new FakeUnary(*deps_, &result);
  call->Begin(req);
  {
    std::unique_lock lock(result.mu);
    result.changed.wait(lock, [&] { return result.finished; });
  }
  call->Done();
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("--max-message-bytes"));
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("StreamVocode"));
  EXPECT_EQ(batcher_->stats().submitted, 0) << "the response was computed before the check";
}

TEST_F(CallCoreTest, UnaryWithinTheLimitReturnsItsAudio) {
  FakeUnary::Result result;
  v1::VocodeRequest req;
  req.mutable_config()->set_voice_id("alice");
  req.mutable_config()->set_encoding(v1::PCM_S16LE);
  for (int i = 0; i < 60; ++i) req.add_tokens(5);
  auto* call = new FakeUnary(*deps_, &result);
  call->Ref();
  call->Begin(req);
  {
    std::unique_lock lock(result.mu);
    result.changed.wait(lock, [&] { return result.finished; });
  }
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(call->response().audio().size(), 60u * 960 * 2);
  call->Done();
  call->Unref();
  EXPECT_DOUBLE_EQ(Count("vocoder_audio_seconds_total"), 60 * 960 / 24000.0);
}

// Item 4 with the core: concurrent opens at the cap never exceed it.
TEST_F(CallCoreTest, ConcurrentOpensAtTheCapNeverExceedIt) {
  Stop();
  Build(/*max_streams=*/4);
  std::vector<std::unique_ptr<FakeStreamCall>> calls(24);
  std::vector<std::thread> openers;
  for (size_t i = 0; i < calls.size(); ++i) {
    openers.emplace_back(
        [&, i] { calls[i] = std::make_unique<FakeStreamCall>(*deps_, /*reading=*/true); });
  }
  for (auto& t : openers) t.join();
  int admitted = 0;
  for (auto& c : calls) {
    if (!c->view().finished) ++admitted;
  }
  EXPECT_EQ(admitted, 4);
  EXPECT_EQ(admission_->open(), 4);
  EXPECT_EQ(Rejections("stream_cap"), 20);
  for (auto& c : calls) {
    if (!c->view().finished) c->Cancel();
  }
  calls.clear();
}

}  // namespace
}  // namespace vocoder::server

// vocoderd end to end: a real server (tiny model, CPU) on 127.0.0.1:0 and the
// C++ client. Streams, batching across voices, the bad-input table,
// cancellation, deadlines, stream caps, voices and drain.
#include "server/server.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <future>
#include <iostream>
#include <thread>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/testing/test_model.h"
#include "tests/testing/vocoderd_process.h"
#include "tests/testing/wait.h"
#include "tools/client/vocoder_client.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;

using vocoder::testing::TestModelDir;
using vocoder::testing::WaitFor;

config::Config TestConfig() {
  config::Config c;
  c.listen = "127.0.0.1:0";
  c.metrics_listen = "";
  c.model_dir = TestModelDir();
  c.max_tokens_per_chunk = 100;
  c.max_streams = 64;
  return c;
}

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(config::Config c = TestConfig()) {
    auto v = model::LoadVocoder(c.model_dir, "cpu");
    ASSERT_TRUE(v.ok()) << v.status();
    auto s = VocoderServer::Start(c, std::move(*v));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::VocoderClient>(channel_);
  }
  void SetUp() override { StartServer(); }

  client::StreamOptions Opts(const std::string& voice = "alice") {
    client::StreamOptions o;
    o.voice_id = voice;
    o.chunk_tokens = 20;
    return o;
  }

  // Sends raw requests and returns the final status.
  grpc::Status Raw(const std::vector<v1::StreamVocodeRequest>& requests) {
    grpc::ClientContext ctx;
    auto stream = client_->stub().StreamVocode(&ctx);
    for (const auto& r : requests) {
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
    v1::StreamVocodeResponse resp;
    while (stream->Read(&resp)) {
    }
    return stream->Finish();
  }

  static v1::StreamVocodeRequest Config(const std::string& voice = "alice",
                                        v1::AudioEncoding enc = v1::PCM_S16LE, uint32_t steps = 0) {
    v1::StreamVocodeRequest r;
    r.mutable_config()->set_voice_id(voice);
    r.mutable_config()->set_encoding(enc);
    r.mutable_config()->set_n_timesteps(steps);
    return r;
  }
  static v1::StreamVocodeRequest Chunk(uint64_t seq, std::vector<uint32_t> tokens, bool final) {
    v1::StreamVocodeRequest r;
    for (auto t : tokens) r.mutable_chunk()->add_tokens(t);
    r.mutable_chunk()->set_sequence_number(seq);
    r.mutable_chunk()->set_is_final(final);
    return r;
  }

  // Waits (on the admission's condition variable, not by polling) until the
  // last call released its slot; a minute is only reached by a leak.
  void ExpectNoStreamsLeft() {
    EXPECT_TRUE(server_->admission().WaitForNoCalls(std::chrono::steady_clock::now() +
                                                    std::chrono::minutes(1)));
    EXPECT_EQ(server_->state().streams.load(), 0);
  }

  std::unique_ptr<VocoderServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::VocoderClient> client_;
};

TEST_F(ServerTest, StreamReturnsExactlyTheExpectedAudioInOrder) {
  const auto tokens = client::DemoTokens(137, 1);
  auto o = Opts();
  o.encoding = v1::PCM_S16LE;
  const auto r = client_->Stream(tokens, o);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.started.sample_rate_hz(), 24000u);
  EXPECT_EQ(r.started.samples_per_token(), 960u);
  EXPECT_EQ(r.started.n_timesteps(), 10u);
  EXPECT_EQ(r.audio.size(), tokens.size() * 960);
  EXPECT_TRUE(r.gap_free);
  ASSERT_FALSE(r.chunks.empty());
  for (size_t i = 1; i < r.chunks.size(); ++i) {
    EXPECT_GE(r.chunks[i].sequence_number, r.chunks[i - 1].sequence_number);
  }
  EXPECT_GT(r.chunks.front().timing.batch_size(), 0u);
}

TEST_F(ServerTest, UnaryVocodeReturnsTheWholeUtterance) {
  grpc::ClientContext ctx;
  v1::VocodeRequest req;
  req.mutable_config()->set_voice_id("bob");
  req.mutable_config()->set_encoding(v1::PCM_F32LE);
  for (auto t : client::DemoTokens(60, 2)) req.add_tokens(static_cast<uint32_t>(t));
  v1::VocodeResponse resp;
  ASSERT_TRUE(client_->stub().Vocode(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.audio().size(), 60u * 960 * 4);
  EXPECT_EQ(resp.format().encoding(), v1::PCM_F32LE);
}

TEST_F(ServerTest, SixteenConcurrentStreamsWithDifferentVoicesAreBatched) {
  std::vector<client::StreamResult> results(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<size_t>(i)] = client_->Stream(
          client::DemoTokens(60, static_cast<uint64_t>(i)), Opts(i % 2 ? "alice" : "bob"));
    });
  }
  for (auto& t : threads) t.join();
  uint32_t largest = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.audio.size(), 60u * 960);
    for (const auto& c : r.chunks) largest = std::max(largest, c.timing.batch_size());
  }
  EXPECT_GT(largest, 1u) << "the batcher never put two streams in one batch";
  const auto stats = server_->batcher().stats();
  EXPECT_GT(stats.mean_batch_size(), 1.0);
  ExpectNoStreamsLeft();
}

// Step scheduling (issue #13) changes when rows run and beside whom, not what
// they compute: four concurrent streams of two voices, different lengths and
// step counts give the same audio under --scheduling step as under batch
// (relative L2 < 1e-4, the model's batch-invariance bound). Streams start in
// a fixed order (each once the previous one has audio), so each gets the same
// stream id, hence the same HiFT phase, on both servers; they then overlap.
std::vector<client::StreamResult> RunFourStreams(const std::string& scheduling,
                                                 batcher::BatcherStats* stats) {
  config::Config c = TestConfig();
  c.scheduling = scheduling;
  auto v = model::LoadVocoder(c.model_dir, "cpu");
  EXPECT_TRUE(v.ok()) << v.status();
  if (!v.ok()) return {};
  auto server = VocoderServer::Start(c, std::move(*v));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return {};
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  client::VocoderClient client(channel);
  constexpr int kStreams = 4;
  std::vector<client::StreamResult> results(kStreams);
  std::vector<std::promise<void>> has_audio(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      if (i > 0) has_audio[static_cast<size_t>(i - 1)].get_future().wait();
      client::StreamOptions o;
      o.voice_id = i % 2 == 0 ? "alice" : "bob";
      o.chunk_tokens = 10 + 5 * i;
      o.n_timesteps = i % 2 == 0 ? 10 : 6;
      bool signalled = false;
      o.on_chunk = [&](const client::ChunkRecord& r) {
        if (!signalled && r.num_samples > 0) {
          signalled = true;
          has_audio[static_cast<size_t>(i)].set_value();
        }
      };
      results[static_cast<size_t>(i)] =
          client.Stream(client::DemoTokens(50 + 10 * i, static_cast<uint64_t>(i)), o);
      if (!signalled) has_audio[static_cast<size_t>(i)].set_value();
    });
  }
  for (auto& t : threads) t.join();
  *stats = (*server)->batcher().stats();
  server->reset();
  return results;
}

TEST(StepSchedulingTest, StreamsSoundTheSameAsUnderBatchScheduling) {
  batcher::BatcherStats batch_stats;
  batcher::BatcherStats step_stats;
  const auto batch = RunFourStreams("batch", &batch_stats);
  const auto step = RunFourStreams("step", &step_stats);
  ASSERT_EQ(batch.size(), 4u);
  ASSERT_EQ(step.size(), 4u);
  for (size_t i = 0; i < batch.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(batch[i].status.ok()) << batch[i].status.error_message();
    ASSERT_TRUE(step[i].status.ok()) << step[i].status.error_message();
    ASSERT_EQ(step[i].audio.size(), batch[i].audio.size());
    ASSERT_EQ(step[i].audio.size(), (50 + 10 * i) * 960);
    double diff = 0;
    double norm = 0;
    for (size_t k = 0; k < batch[i].audio.size(); ++k) {
      const double d = double(step[i].audio[k]) - double(batch[i].audio[k]);
      diff += d * d;
      norm += double(batch[i].audio[k]) * double(batch[i].audio[k]);
    }
    ASSERT_GT(norm, 0);
    EXPECT_LT(std::sqrt(diff / norm), 1e-4);
  }
  // Each mode ran as it says: whole batches, or steps and no batch.
  EXPECT_GT(batch_stats.batches, 0);
  EXPECT_EQ(batch_stats.steps, 0);
  EXPECT_EQ(step_stats.batches, 0);
  EXPECT_GT(step_stats.steps, 0);
  EXPECT_GT(step_stats.completed_ok, 0);
  std::cout << "step scheduling: " << step_stats.steps << " steps, mean running rows "
            << step_stats.mean_running_rows() << ", joins "
            << step_stats.decided(batcher::StepReason::kJoin) << "\n";
}

TEST_F(ServerTest, BadInputGetsItsExactCodeAndTheServerKeepsServing) {
  struct Row {
    const char* what;
    std::vector<v1::StreamVocodeRequest> requests;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<uint32_t> ok_tokens(10, 5);
  const std::vector<Row> rows = {
      {"chunk before config",
       {Chunk(0, ok_tokens, true)},
       grpc::INVALID_ARGUMENT,
       "first message must carry the config"},
      {"config twice", {Config(), Config()}, grpc::INVALID_ARGUMENT, "config sent twice"},
      {"no encoding",
       {Config("alice", v1::AUDIO_ENCODING_UNSPECIFIED)},
       grpc::INVALID_ARGUMENT,
       "encoding"},
      {"too many steps",
       {Config("alice", v1::PCM_S16LE, 500)},
       grpc::INVALID_ARGUMENT,
       "n_timesteps"},
      {"unknown voice", {Config("nobody")}, grpc::NOT_FOUND, "'nobody'"},
      {"token out of range",
       {Config(), Chunk(0, {1, 2, 7000}, true)},
       grpc::INVALID_ARGUMENT,
       "token 2 of the chunk is 7000"},
      {"sequence gap",
       {Config(), Chunk(0, ok_tokens, false), Chunk(2, ok_tokens, true)},
       grpc::INVALID_ARGUMENT,
       "expected 1"},
      {"oversize chunk",
       {Config(), Chunk(0, std::vector<uint32_t>(101, 5), true)},
       grpc::INVALID_ARGUMENT,
       "--max-tokens-per-chunk"},
      {"chunk after final",
       {Config(), Chunk(0, ok_tokens, true), Chunk(1, ok_tokens, true)},
       grpc::INVALID_ARGUMENT,
       "after the final"},
  };
  for (const Row& row : rows) {
    const grpc::Status s = Raw(row.requests);
    EXPECT_EQ(s.error_code(), row.code) << row.what << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(row.message)) << row.what;
    // The next stream still works.
    const auto good = client_->Stream(client::DemoTokens(12, 3), Opts());
    EXPECT_TRUE(good.status.ok()) << row.what
                                  << " broke the server: " << good.status.error_message();
  }
  ExpectNoStreamsLeft();
}

// The voice RPCs: tests/server/voice_service_test.cc.

TEST_F(ServerTest, CancelledStreamStopsSubmittingAndLeavesNothingBehind) {
  auto o = Opts();
  o.chunk_tokens = 10;
  o.tokens_per_second = 100;  // still sending when it cancels
  o.cancel_after_audio_chunks = 1;
  const auto before = server_->batcher().stats();
  const auto r = client_->Stream(client::DemoTokens(400, 5), o);
  EXPECT_EQ(r.status.error_code(), grpc::CANCELLED);
  ExpectNoStreamsLeft();
  const auto after = server_->batcher().stats();
  // 400 tokens at 10 per chunk would need ~40 jobs; the cancelled stream
  // stopped after a handful.
  EXPECT_LT(after.submitted - before.submitted, 10);
  // The cancelled stream's queued job leaves the queue at the batcher's next
  // decision (swept as cancelled); on a loaded machine that can come after
  // the stream's slot was released, so wait for it rather than sample once.
  EXPECT_TRUE(WaitFor([&] { return server_->batcher().queue_depth() == 0; }))
      << "a cancelled stream left " << server_->batcher().queue_depth() << " jobs queued";
}

TEST_F(ServerTest, ClientDeadlineBecomesTheJobDeadline) {
  auto o = Opts();
  o.deadline = std::chrono::milliseconds(1);
  const auto r = client_->Stream(client::DemoTokens(200, 6), o);
  EXPECT_EQ(r.status.error_code(), grpc::DEADLINE_EXCEEDED);
  ExpectNoStreamsLeft();
}

// Item 7: a unary response over the send limit is refused before any work,
// with a message naming the limit and the streaming RPC.
TEST_F(ServerTest, UnaryOverTheMessageLimitIsRefusedBeforeComputing) {
  grpc::ClientContext ctx;
  v1::VocodeRequest req;
  req.mutable_config()->set_voice_id("bob");
  req.mutable_config()->set_encoding(v1::PCM_F32LE);
  for (int i = 0; i < 1200; ++i) req.add_tokens(5);  // 1200 x 960 x 4 B = 4.6 MB
  v1::VocodeResponse resp;
  const auto before = server_->batcher().stats().submitted;
  const grpc::Status s = client_->stub().Vocode(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("--max-message-bytes"));
  EXPECT_THAT(s.error_message(), HasSubstr("StreamVocode"));
  EXPECT_EQ(server_->batcher().stats().submitted, before);
}

// Item 1 through gRPC: clients that send a long F32 utterance and do not
// read are held back (a few jobs each), a reader beside them finishes, and
// the non-readers get every sample once they read.
TEST_F(ServerTest, NonReadingClientsAreHeldBackAndGetTheirAudioLater) {
  constexpr int kTokens = 1000;  // 38 MB of F32 audio would be buffered per stream
  struct Quiet {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::StreamVocodeRequest, v1::StreamVocodeResponse>>
        stream;
  };
  // The quiet clients' transport keeps gRPC's initial 64 KiB stream window
  // (no BDP probing): with probing on loopback the window grows to hold the
  // whole utterance in the client's transport, and the server never sees a
  // client that does not read.
  grpc::ChannelArguments args;
  args.SetInt("grpc.http2.bdp_probe", 0);
  args.SetInt("grpc.http2.lookahead_bytes", 64 * 1024);
  auto quiet_stub = v1::Vocoder::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials(), args));
  std::vector<std::unique_ptr<Quiet>> quiet;
  for (int i = 0; i < 2; ++i) {
    auto q = std::make_unique<Quiet>();
    q->stream = quiet_stub->StreamVocode(&q->ctx);
    ASSERT_TRUE(q->stream->Write(Config("alice", v1::PCM_F32LE)));
    const auto tokens = client::DemoTokens(kTokens, 20 + static_cast<uint64_t>(i));
    for (int c = 0; c * 100 < kTokens; ++c) {
      std::vector<uint32_t> part(tokens.begin() + c * 100, tokens.begin() + (c + 1) * 100);
      ASSERT_TRUE(
          q->stream->Write(Chunk(static_cast<uint64_t>(c), part, (c + 1) * 100 >= kTokens)));
    }
    q->stream->WritesDone();
    quiet.push_back(std::move(q));
  }
  auto o = Opts();
  o.encoding = v1::PCM_F32LE;
  const auto reader = client_->Stream(client::DemoTokens(300, 30), o);
  ASSERT_TRUE(reader.status.ok()) << reader.status.error_message();
  EXPECT_EQ(reader.audio.size(), 300u * 960);
  // Held back, the quiet streams stop once their queued audio and gRPC's own
  // flow-control window are full (how many chunks that is depends on the
  // transport's window, which grows with BDP probing); without backpressure
  // they would be vocoded whole while nobody reads. So wait until both are
  // held (no job in flight, waiting for their client to read), count what
  // they were given, and compare it with what their whole utterances take
  // once they do read.
  const auto reader_jobs = static_cast<int64_t>(reader.chunks.size()) + 1;
  ASSERT_TRUE(WaitFor([&] { return server_->calls().WaitingForClient() == quiet.size(); }))
      << "the non-reading streams were never held back";
  const auto held = server_->batcher().stats().submitted - reader_jobs;
  for (auto& q : quiet) {
    v1::StreamVocodeResponse r;
    uint64_t samples = 0;
    while (q->stream->Read(&r)) {
      if (r.has_audio()) samples += r.audio().num_samples();
    }
    const grpc::Status s = q->stream->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(samples, static_cast<uint64_t>(kTokens) * 960);
  }
  const auto whole = server_->batcher().stats().submitted - reader_jobs;
  EXPECT_LT(held * 4, whole * 3) << "non-reading clients kept the model busy: " << held
                                 << " of their " << whole << " jobs ran before they read";
  ExpectNoStreamsLeft();
}

// Item 9 in process: a drain with a long grace ends at once when interrupted
// (a second signal); the open stream gets UNAVAILABLE, nothing hangs.
TEST_F(ServerTest, InterruptedDrainFinishesOpenStreamsWithUnavailable) {
  grpc::ClientContext ctx;
  auto stream = client_->stub().StreamVocode(&ctx);
  ASSERT_TRUE(stream->Write(Config()));
  v1::StreamVocodeResponse started;
  ASSERT_TRUE(stream->Read(&started));  // admitted and configured; now it stalls
  std::thread drainer([&] { server_->Drain(std::chrono::hours(1)); });
  server_->InterruptDrain();
  drainer.join();
  v1::StreamVocodeResponse r;
  while (stream->Read(&r)) {
  }
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
}

TEST(ServerLimitsTest, StreamCapGivesResourceExhausted) {
  config::Config c = TestConfig();
  c.max_streams = 1;
  auto v = model::LoadVocoder(c.model_dir, "cpu");
  ASSERT_TRUE(v.ok());
  auto s = VocoderServer::Start(c, std::move(*v));
  ASSERT_TRUE(s.ok()) << s.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*s)->port()),
                                     grpc::InsecureChannelCredentials());
  client::VocoderClient client(channel);
  client::StreamOptions slow;
  slow.voice_id = "alice";
  slow.chunk_tokens = 5;
  slow.tokens_per_second = 25;
  std::thread first(
      [&] { EXPECT_TRUE(client.Stream(client::DemoTokens(50, 7), slow).status.ok()); });
  ASSERT_TRUE(WaitFor([&] { return (*s)->state().streams.load() > 0; }));
  client::StreamOptions o;
  o.voice_id = "alice";
  const auto r = client.Stream(client::DemoTokens(10, 8), o);
  EXPECT_EQ(r.status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(r.status.error_message(), HasSubstr("--max-streams"));
  google::rpc::Status details;  // retryable: RetryInfo rides along
  ASSERT_TRUE(details.ParseFromString(r.status.error_details()));
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details_size() == 1 && details.details(0).UnpackTo(&retry));
  EXPECT_GT(retry.retry_delay().nanos() + retry.retry_delay().seconds(), 0);
  first.join();
}

TEST_F(ServerTest, DrainFinishesActiveStreamsAndRefusesNewOnes) {
  grpc::health::v1::HealthCheckRequest ready_req;
  ready_req.set_service(kReadinessService);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, ready_req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  auto o = Opts();
  o.chunk_tokens = 10;
  o.tokens_per_second = 50;  // ~2 s of sending
  client::StreamResult active;
  std::thread streamer([&] { active = client_->Stream(client::DemoTokens(100, 9), o); });
  ASSERT_TRUE(WaitFor([&] { return server_->state().streams.load() > 0; }));
  std::thread drainer([&] { server_->Drain(std::chrono::seconds(30)); });
  ASSERT_TRUE(WaitFor([&] { return server_->state().draining.load(); }));
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    const auto s = health->Check(&ctx, ready_req, &resp);
    EXPECT_TRUE(!s.ok() || resp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  const auto refused = client_->Stream(client::DemoTokens(10, 10), Opts());
  EXPECT_EQ(refused.status.error_code(), grpc::UNAVAILABLE);
  streamer.join();
  drainer.join();
  EXPECT_TRUE(active.status.ok()) << active.status.error_message();
  EXPECT_EQ(active.audio.size(), 100u * 960);
}

// The real binary: SIGTERM while a stream is active -> it completes, the
// process exits 0.
TEST(VocoderdProcessTest, SigtermDrainsAndExitsZero) {
  const testing::VocoderdProcess proc = testing::StartVocoderd(VOCODERD_BIN_PATH, 20);
  ASSERT_GT(proc.pid, 0);
  const pid_t pid = proc.pid;
  const int port = testing::PortAfter(proc.line, "port ");
  ASSERT_GE(port, 0) << "vocoderd printed: " << proc.line;
  client::VocoderClient client(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  // The stream is admitted (its `started` came back) before the signal, and
  // sends its tokens after it: the drain must wait for it, whatever the
  // machine's speed (no sleep deciding which comes first).
  grpc::ClientContext ctx;
  auto stream = client.stub().StreamVocode(&ctx);
  v1::StreamVocodeRequest config;
  config.mutable_config()->set_voice_id("alice");
  config.mutable_config()->set_encoding(v1::PCM_S16LE);
  ASSERT_TRUE(stream->Write(config));
  v1::StreamVocodeResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_started());
  kill(pid, SIGTERM);
  const auto tokens = client::DemoTokens(75, 11);
  for (size_t at = 0, seq = 0; at < tokens.size(); at += 10, ++seq) {
    v1::StreamVocodeRequest chunk;
    for (size_t i = at; i < std::min(tokens.size(), at + 10); ++i) {
      chunk.mutable_chunk()->add_tokens(static_cast<uint32_t>(tokens[i]));
    }
    chunk.mutable_chunk()->set_sequence_number(seq);
    chunk.mutable_chunk()->set_is_final(at + 10 >= tokens.size());
    ASSERT_TRUE(stream->Write(chunk)) << "the stream was cut at chunk " << seq;
  }
  stream->WritesDone();
  uint64_t samples = 0;
  while (stream->Read(&response)) {
    if (response.has_audio()) samples += response.audio().num_samples();
  }
  const grpc::Status finished = stream->Finish();
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  EXPECT_EQ(samples, 75u * 960);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Item 9: the real binary with a 10-minute grace and a stalled stream; the
// second SIGTERM ends the drain at once: the stream gets UNAVAILABLE and the
// process exits 0 (before the fix it waited out the grace).
TEST(VocoderdProcessTest, SecondSigtermEndsTheDrainAtOnce) {
  const testing::VocoderdProcess proc = testing::StartVocoderd(VOCODERD_BIN_PATH, 600);
  ASSERT_GT(proc.pid, 0);
  const pid_t pid = proc.pid;
  const int port = testing::PortAfter(proc.line, "port ");
  ASSERT_GE(port, 0) << "vocoderd printed: " << proc.line;
  client::VocoderClient client(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  auto stream = client.stub().StreamVocode(&ctx);
  v1::StreamVocodeRequest config;
  config.mutable_config()->set_voice_id("alice");
  config.mutable_config()->set_encoding(v1::PCM_S16LE);
  ASSERT_TRUE(stream->Write(config));
  v1::StreamVocodeResponse started;
  ASSERT_TRUE(stream->Read(&started));  // admitted; it now holds the drain
  kill(pid, SIGTERM);
  // The first signal starts the drain (health flips); the second one ends it.
  grpc::health::v1::HealthCheckRequest ready_req;
  ready_req.set_service(kReadinessService);
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  for (;;) {
    grpc::ClientContext hctx;
    grpc::health::v1::HealthCheckResponse resp;
    const auto s = health->Check(&hctx, ready_req, &resp);
    if (!s.ok() || resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) break;
  }
  kill(pid, SIGTERM);
  v1::StreamVocodeResponse r;
  while (stream->Read(&r)) {
  }
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::UNAVAILABLE) << s.error_message();
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace vocoder::server

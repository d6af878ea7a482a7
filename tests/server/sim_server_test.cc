// vocoderd end to end on the simulated accelerator (--device sim:PROFILE):
// the tiny export's manifest and voices, no weights run, so many streams are
// cheap. The subject is the server, not the numerics: every stream completes
// with gap-free audio that continues the voice's tone across chunks (stitch,
// crossfade and start_sample arithmetic), concurrent streams share batches,
// and /metrics labels the device "sim".
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <thread>

#include "model/sim_vocoder.h"
#include "server/server.h"
#include "tests/testing/test_model.h"
#include "tools/client/vocoder_client.h"

namespace vocoder::server {
namespace {

using vocoder::testing::TestModelDir;

// Batches of a few ms, so streams overlap and share them.
constexpr char kProfile[] = R"({"format": "vocoderd-sim-profile/1", "name": "e2e",
  "stages": {"encoder": {"overhead_ms": 1}, "estimator": {"overhead_ms": 0.5},
             "hift": {"overhead_ms": 1, "ms_per_unit": 0.001}}})";

class SimServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    profile_ = ::testing::TempDir() + "/sim_server_test_profile.json";
    std::ofstream(profile_) << kProfile;
    config::Config c;
    c.listen = "127.0.0.1:0";
    c.metrics_listen = "";
    c.model_dir = TestModelDir();
    c.device = "sim:" + profile_;
    c.max_streams = 128;
    auto v = model::LoadVocoder(c.model_dir, c.device);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ((*v)->device(), "sim:e2e");
    auto s = VocoderServer::Start(c, std::move(*v));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    client_ = std::make_unique<client::VocoderClient>(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { std::remove(profile_.c_str()); }

  int TonePeriod(const std::string& voice) {
    auto data = model::ReadVoiceFile(TestModelDir() + "/voices/" + voice + ".pt");
    EXPECT_TRUE(data.ok()) << data.status();
    return model::SimTonePeriod(*data);
  }

  std::string profile_;
  std::unique_ptr<VocoderServer> server_;
  std::unique_ptr<client::VocoderClient> client_;
};

TEST_F(SimServerTest, ConcurrentStreamsGetContinuousAudioInSharedBatches) {
  constexpr int kStreams = 24;
  const std::vector<std::string> voices = {"alice", "bob"};
  std::vector<client::StreamResult> results(kStreams);
  std::vector<std::vector<int64_t>> tokens(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    tokens[i] = client::DemoTokens(60 + 7 * i, static_cast<uint64_t>(i));
    threads.emplace_back([&, i] {
      client::StreamOptions o;
      o.voice_id = voices[static_cast<size_t>(i) % voices.size()];
      o.encoding = v1::PCM_F32LE;
      o.chunk_tokens = 20;
      results[i] = client_->Stream(tokens[i], o);
    });
  }
  for (auto& t : threads) t.join();
  uint32_t largest_batch = 0;
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    const auto& r = results[i];
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(r.gap_free);
    ASSERT_EQ(r.audio.size(), tokens[i].size() * 960);
    // After upstream's 40 ms trim fade, the stitched audio is the voice's tone
    // at every absolute sample: crossfades join equal signals seamlessly.
    const int period = TonePeriod(voices[static_cast<size_t>(i) % voices.size()]);
    for (size_t s = 960; s < r.audio.size(); ++s) {
      ASSERT_NEAR(r.audio[s], model::SimToneSample(period, static_cast<int64_t>(s)), 1e-5)
          << "sample " << s;
    }
    EXPECT_EQ(r.audio[0], 0.0f);  // the fade's silence
    for (const auto& c : r.chunks) largest_batch = std::max(largest_batch, c.timing.batch_size());
  }
  EXPECT_GT(largest_batch, 1u);
  for (int i = 0; i < 500 && server_->state().streams.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->state().streams.load(), 0);
}

TEST_F(SimServerTest, MetricsLabelTheDeviceSim) {
  const auto all = server_->registry().Collect();
  bool found = false;
  for (const auto& f : all) {
    if (f.name != "vocoder_build_info") continue;
    for (const auto& m : f.metric) {
      for (const auto& l : m.label) found |= l.name == "device" && l.value == "sim";
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(SimServerTest, BadInputStillGetsTheRunnersError) {
  // Validation is the runner's, not the simulator's own: an utterance too
  // long for the position table fails as it would on the real model.
  client::StreamOptions o;
  o.voice_id = "alice";
  o.chunk_tokens = 100;
  std::vector<int64_t> tokens = client::DemoTokens(40, 3);
  tokens[5] = 7000;
  const auto r = client_->Stream(tokens, o);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace vocoder::server

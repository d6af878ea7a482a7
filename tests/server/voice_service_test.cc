// The voice RPCs end to end (tiny model, CPU, a server over a temporary voice
// repository holding copies of the export's voices): register/list/get/delete,
// the display_name bound, pages bounded by bytes, page tokens the server did
// not issue, admission while draining, and registration off the gRPC
// callback threads.
#include "server/voice_service.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/server.h"
#include "server/voice_file.h"
#include "tests/testing/test_model.h"
#include "tests/testing/wait.h"
#include "tools/client/vocoder_client.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::TestModelDir;

v1::RegisterVoiceRequest VoiceRequest(const std::string& id, int seed = 0) {
  v1::RegisterVoiceRequest req;
  req.set_voice_id(id);
  auto* c = req.mutable_conditioning();
  for (int i = 0; i < 10; ++i) c->add_prompt_tokens(static_cast<uint32_t>(i * 11 + seed));
  c->set_prompt_frames(20);
  for (int i = 0; i < 20 * 80; ++i) c->add_prompt_mel(-5.0f + 0.001f * static_cast<float>(i % 97));
  for (int i = 0; i < 192; ++i) c->add_embedding(0.01f * static_cast<float>(i % 13));
  return req;
}

model::VoiceData VoiceData(int seed) {
  const auto req = VoiceRequest("x", seed);
  const auto& c = req.conditioning();
  model::VoiceData d;
  d.prompt_tokens.assign(c.prompt_tokens().begin(), c.prompt_tokens().end());
  d.prompt_feat.assign(c.prompt_mel().begin(), c.prompt_mel().end());
  d.embedding.assign(c.embedding().begin(), c.embedding().end());
  return d;
}

class VoiceServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/voice-service-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    repo_ = tmpl;
    const std::string voices = TestModelDir() + "/voices";
    ASSERT_EQ(std::system(("cp " + voices + "/alice.pt " + voices + "/bob.pt " + repo_).c_str()),
              0);
  }
  void TearDown() override {
    server_.reset();
    [[maybe_unused]] int rc = std::system(("rm -rf " + repo_).c_str());
  }
  void Start(int max_message_bytes = 4 << 20) {
    config::Config c;
    c.listen = "127.0.0.1:0";
    c.metrics_listen = "";
    c.model_dir = TestModelDir();
    c.voices_dir = repo_;
    c.max_message_bytes = max_message_bytes;
    auto v = model::LoadVocoder(c.model_dir, "cpu");
    ASSERT_TRUE(v.ok()) << v.status();
    auto s = VocoderServer::Start(c, std::move(*v));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::VocoderClient>(channel_);
  }
  grpc::Status List(const std::string& token, int page_size, v1::ListVoicesResponse* out) {
    grpc::ClientContext ctx;
    v1::ListVoicesRequest req;
    req.set_page_token(token);
    req.set_page_size(page_size);
    return client_->stub().ListVoices(&ctx, req, out);
  }
  client::StreamOptions Opts(const std::string& voice) {
    client::StreamOptions o;
    o.voice_id = voice;
    o.chunk_tokens = 20;
    return o;
  }

  std::string repo_;
  std::unique_ptr<VocoderServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::VocoderClient> client_;
};

TEST_F(VoiceServiceTest, RegisterListGetDelete) {
  Start();
  auto& stub = client_->stub();
  auto req = VoiceRequest("carol");
  req.set_display_name("Carol");
  v1::Voice voice;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub.RegisterVoice(&ctx, req, &voice).ok());
  }
  EXPECT_EQ(voice.voice_id(), "carol");
  EXPECT_EQ(voice.prompt_tokens(), 10u);
  EXPECT_EQ(voice.fingerprint().size(), 32u);
  {
    std::ifstream in(repo_ + "/carol.voice", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    ASSERT_TRUE(DecodeVoiceFile(bytes).ok()) << "RegisterVoice writes the repository";
  }
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub.RegisterVoice(&ctx, req, &voice).error_code(), grpc::ALREADY_EXISTS);
  }
  {
    auto bad = req;
    bad.set_voice_id("dave");
    bad.mutable_conditioning()->mutable_embedding()->Truncate(100);
    grpc::ClientContext ctx;
    const auto s = stub.RegisterVoice(&ctx, bad, &voice);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("embedding has 100"));
  }
  {
    auto bad = req;
    bad.set_voice_id("not a valid id!");
    grpc::ClientContext ctx;
    EXPECT_EQ(stub.RegisterVoice(&ctx, bad, &voice).error_code(), grpc::INVALID_ARGUMENT);
  }
  EXPECT_TRUE(client_->Stream(client::DemoTokens(30, 4), Opts("carol")).status.ok());
  {
    v1::ListVoicesResponse list;
    ASSERT_TRUE(List("", 2, &list).ok());
    ASSERT_EQ(list.voices_size(), 2);
    EXPECT_EQ(list.voices(0).voice_id(), "alice");
    EXPECT_EQ(list.voices(1).voice_id(), "bob");
    ASSERT_FALSE(list.next_page_token().empty());
    v1::ListVoicesResponse next;
    ASSERT_TRUE(List(list.next_page_token(), 2, &next).ok());
    ASSERT_EQ(next.voices_size(), 1);
    EXPECT_EQ(next.voices(0).voice_id(), "carol");
    EXPECT_TRUE(next.next_page_token().empty());
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteVoiceRequest d;
    d.set_voice_id("carol");
    google::protobuf::Empty e;
    ASSERT_TRUE(stub.DeleteVoice(&ctx, d, &e).ok());
    grpc::ClientContext ctx2;
    v1::GetVoiceRequest g;
    g.set_voice_id("carol");
    EXPECT_EQ(stub.GetVoice(&ctx2, g, &voice).error_code(), grpc::NOT_FOUND);
  }
}

TEST_F(VoiceServiceTest, DisplayNameIsBounded) {
  Start();
  auto req = VoiceRequest("carol");
  req.set_display_name(std::string(kMaxDisplayNameBytes + 1, 'n'));
  v1::Voice voice;
  grpc::ClientContext ctx;
  const auto s = client_->stub().RegisterVoice(&ctx, req, &voice);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("display_name"));
}

TEST_F(VoiceServiceTest, ListVoicesPagesStayUnderAQuarterOfTheMessageLimit) {
  // 40 voices with the longest names, written into the repository before
  // start: about 13 kB of listing against a 16 kB message limit.
  for (int i = 0; i < 40; ++i) {
    char id[16];
    std::snprintf(id, sizeof(id), "v%02d", i);
    std::ofstream(repo_ + "/" + id + ".voice", std::ios::binary)
        << EncodeVoiceFile({id, std::string(kMaxDisplayNameBytes, 'n'), 1, VoiceData(i)});
  }
  Start(16 << 10);
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListVoicesResponse page;
    ASSERT_TRUE(List(token, 1000, &page).ok());
    EXPECT_LE(page.ByteSizeLong(), size_t{4096});
    EXPECT_GT(page.voices_size(), 0);
    for (const auto& v : page.voices()) seen.push_back(v.voice_id());
    token = page.next_page_token();
    ASSERT_LT(++pages, 50);
  } while (!token.empty());
  EXPECT_GT(pages, 1);
  ASSERT_EQ(seen.size(), 42u);  // every voice once, in order
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 42u);
}

TEST_F(VoiceServiceTest, PageTokensTheServerDidNotIssueAreInvalidArgument) {
  Start();
  for (const std::string& token :
       {std::string("garbage!!\x01"), std::string("0"), std::string("alice"),
        std::string("v1.616c696365.0000000000000000"), VoicePageToken("alice") + "0"}) {
    v1::ListVoicesResponse page;
    const auto s = List(token, 1, &page);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << token;
    EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
  }
  v1::ListVoicesResponse page;
  ASSERT_TRUE(List(VoicePageToken("alice"), 1, &page).ok());
  ASSERT_EQ(page.voices_size(), 1);
  EXPECT_EQ(page.voices(0).voice_id(), "bob");
}

TEST_F(VoiceServiceTest, VoiceRpcsAreRefusedWhileDraining) {
  Start();
  auto o = Opts("alice");
  o.chunk_tokens = 10;
  o.tokens_per_second = 50;  // ~2 s of sending keeps the drain waiting
  client::StreamResult active;
  std::thread streamer([&] { active = client_->Stream(client::DemoTokens(100, 9), o); });
  ASSERT_TRUE(vocoder::testing::WaitFor([&] { return server_->state().streams.load() > 0; }));
  std::thread drainer([&] { server_->Drain(std::chrono::seconds(120)); });
  ASSERT_TRUE(vocoder::testing::WaitFor([&] { return server_->state().draining.load(); }));
  auto& stub = client_->stub();
  v1::Voice voice;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub.RegisterVoice(&ctx, VoiceRequest("carol"), &voice).error_code(),
              grpc::UNAVAILABLE);
  }
  {
    grpc::ClientContext ctx;
    v1::GetVoiceRequest g;
    g.set_voice_id("alice");
    EXPECT_EQ(stub.GetVoice(&ctx, g, &voice).error_code(), grpc::UNAVAILABLE);
  }
  {
    v1::ListVoicesResponse page;
    EXPECT_EQ(List("", 0, &page).error_code(), grpc::UNAVAILABLE);
  }
  {
    grpc::ClientContext ctx;
    v1::DeleteVoiceRequest d;
    d.set_voice_id("alice");
    google::protobuf::Empty e;
    EXPECT_EQ(stub.DeleteVoice(&ctx, d, &e).error_code(), grpc::UNAVAILABLE);
  }
  // The open stream only holds the drain open; how it ends is the drain
  // tests' subject (ServerTest.DrainFinishesActiveStreamsAndRefusesNewOnes).
  streamer.join();
  drainer.join();
  struct stat st {};
  EXPECT_EQ(stat((repo_ + "/alice.pt").c_str(), &st), 0) << "a draining replica deleted a voice";
}

TEST_F(VoiceServiceTest, RegistrationRunsOffTheCallbackThreadsWithABoundedQueue) {
  Start();
  absl::Notification entered, release;
  std::atomic<bool> first{true};
  server_->voices().SetBeforeWriteForTest([&] {
    if (first.exchange(false)) entered.Notify();
    release.WaitForNotification();  // a stuck shared filesystem
  });
  auto call = [&](const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::Voice voice;
    return client_->stub().RegisterVoice(&ctx, VoiceRequest(id), &voice);
  };
  grpc::Status first_status;
  std::thread blocked([&] { first_status = call("w-first"); });
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  constexpr int kMore = kMaxPendingVoiceWrites + 3;
  std::vector<grpc::Status> statuses(kMore);
  std::atomic<int> refused{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < kMore; ++i) {
    callers.emplace_back([&, i] {
      statuses[static_cast<size_t>(i)] = call("w" + std::to_string(i));
      if (statuses[static_cast<size_t>(i)].error_code() == grpc::RESOURCE_EXHAUSTED) {
        refused.fetch_add(1);
      }
    });
  }
  // While registrations wait on the filesystem, the overflow is refused at
  // once and other RPCs are answered.
  for (int i = 0; i < 3000 && refused.load() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(refused.load(), 3);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetVoiceRequest g;
    g.set_voice_id("alice");
    v1::Voice voice;
    EXPECT_TRUE(client_->stub().GetVoice(&ctx, g, &voice).ok());
  }
  release.Notify();
  blocked.join();
  for (auto& t : callers) t.join();
  EXPECT_TRUE(first_status.ok()) << first_status.error_message();
  int ok = 0;
  for (const auto& s : statuses) ok += s.ok() ? 1 : 0;
  EXPECT_EQ(ok, kMaxPendingVoiceWrites);
  EXPECT_EQ(server_->voices().size(), 2u + 1u + kMaxPendingVoiceWrites);
}

}  // namespace
}  // namespace vocoder::server

// A standard and a turbo export served side by side (issue 17), each by its
// own vocoderd in this process (127.0.0.1:0, --scheduling step, tiny models,
// CPU): each says which model it serves (Started, /metrics), runs its own
// number of Euler steps per job, and refuses a stream shaped for the other
// where that can be detected (the variant the client asks for; a step count
// only the standard model takes).
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

#include "server/server.h"
#include "tests/testing/raw_http.h"
#include "tests/testing/test_model.h"
#include "tools/client/vocoder_client.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::TestModelDir;
using vocoder::testing::TestTurboModelDir;

struct Served {
  std::unique_ptr<VocoderServer> server;
  std::unique_ptr<client::VocoderClient> client;
};

class VariantServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const auto& [variant, dir] :
         std::map<std::string, std::string>{{model::kVariantStandard, TestModelDir()},
                                            {model::kVariantTurbo, TestTurboModelDir()}}) {
      config::Config c;
      c.listen = "127.0.0.1:0";
      c.metrics_listen = "127.0.0.1:0";
      c.model_dir = dir;
      c.scheduling = "step";
      c.max_tokens_per_chunk = 100;
      auto v = model::LoadVocoder(dir, "cpu");
      ASSERT_TRUE(v.ok()) << v.status();
      ASSERT_EQ((*v)->manifest().variant, variant);
      auto s = VocoderServer::Start(c, std::move(*v));
      ASSERT_TRUE(s.ok()) << s.status();
      Served& served = (*servers_)[variant];
      served.server = std::move(*s);
      served.client = std::make_unique<client::VocoderClient>(
          grpc::CreateChannel("127.0.0.1:" + std::to_string(served.server->port()),
                              grpc::InsecureChannelCredentials()));
    }
  }
  static void TearDownTestSuite() { servers_->clear(); }
  // A failed SetUpTestSuite must fail every test, not only print.
  void SetUp() override { ASSERT_EQ(servers_->size(), 2u) << "a server did not start"; }

  static Served& Of(const std::string& variant) { return servers_->at(variant); }

  // The server's /metrics text.
  static std::string Scrape(const std::string& variant) {
    const auto reply = vocoder::testing::Get(Of(variant).server->metrics_port(), "/metrics");
    EXPECT_EQ(reply.status, 200);
    return reply.body;
  }
  // The value of the series whose line starts with `series` ("name{labels}").
  static double Value(const std::string& text, const std::string& series) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(series, 0) == 0) return std::stod(line.substr(line.rfind(' ') + 1));
    }
    ADD_FAILURE() << "no series " << series;
    return -1;
  }

  static client::StreamOptions Opts(const std::string& model_variant = "", uint32_t steps = 0) {
    client::StreamOptions o;
    o.voice_id = "alice";
    o.chunk_tokens = 20;
    o.model_variant = model_variant;
    o.n_timesteps = steps;
    return o;
  }

  static grpc::Status Unary(const std::string& variant, const std::string& model_variant,
                            uint32_t steps, v1::VocodeResponse* response) {
    grpc::ClientContext ctx;
    v1::VocodeRequest req;
    req.mutable_config()->set_voice_id("bob");
    req.mutable_config()->set_encoding(v1::PCM_F32LE);
    req.mutable_config()->set_model_variant(model_variant);
    req.mutable_config()->set_n_timesteps(steps);
    for (auto t : client::DemoTokens(40, 7)) req.add_tokens(static_cast<uint32_t>(t));
    return Of(variant).client->stub().Vocode(&ctx, req, response);
  }

  static inline std::map<std::string, Served>* servers_ = new std::map<std::string, Served>();
};

// Started and /metrics say which model is served and its default steps.
TEST_F(VariantServerTest, EachSaysWhichVariantItServes) {
  for (const auto& [variant, steps] :
       std::map<std::string, uint32_t>{{model::kVariantStandard, 10}, {model::kVariantTurbo, 2}}) {
    SCOPED_TRACE(variant);
    const auto tokens = client::DemoTokens(45, 1);
    const auto r = Of(variant).client->Stream(tokens, Opts());
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.started.n_timesteps(), steps);
    EXPECT_EQ(r.started.model_variant(), variant);
    EXPECT_EQ(r.audio.size(), tokens.size() * 960);
    EXPECT_TRUE(r.gap_free);
    const std::string text = Scrape(variant);
    EXPECT_THAT(text, HasSubstr("variant=\"" + variant + "\""));
    EXPECT_THAT(text, HasSubstr("n_timesteps=\"" + std::to_string(steps) + "\""));
  }
}

// Each server serves its own model: a job takes the variant's default steps
// (counted by vocoder_steps_total: one per estimator call of the running set)
// and its audio is finite, not silent, and not the other model's.
TEST_F(VariantServerTest, EachServesItsOwnModel) {
  std::map<std::string, std::vector<float>> audio;
  for (const auto& [variant, steps] :
       std::map<std::string, double>{{model::kVariantStandard, 10}, {model::kVariantTurbo, 2}}) {
    SCOPED_TRACE(variant);
    const std::string series = "vocoder_steps_total{model=\"s3gen-tiny\"}";
    const double before = Value(Scrape(variant), series);
    v1::VocodeResponse resp;
    const grpc::Status s = Unary(variant, variant, 0, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.format().n_timesteps(), steps);
    EXPECT_EQ(resp.format().model_variant(), variant);
    EXPECT_EQ(Value(Scrape(variant), series) - before, steps);
    ASSERT_EQ(resp.audio().size(), 40u * 960 * 4);
    std::vector<float>& a = audio[variant];
    a.resize(40 * 960);
    std::memcpy(a.data(), resp.audio().data(), resp.audio().size());
    double energy = 0;
    for (float x : a) {
      ASSERT_TRUE(std::isfinite(x));
      energy += double(x) * x;
    }
    EXPECT_GT(energy / a.size(), 1e-8);
  }
  double diff = 0;
  for (size_t i = 0; i < audio["standard"].size(); ++i) {
    diff += std::abs(audio["standard"][i] - audio["turbo"][i]);
  }
  EXPECT_GT(diff, 0) << "the two servers returned the same audio";
  // A turbo request for 1 and 4 steps (the range around its distilled 2).
  for (uint32_t steps : {1u, 4u}) {
    v1::VocodeResponse resp;
    const grpc::Status s = Unary(model::kVariantTurbo, "", steps, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.format().n_timesteps(), steps);
  }
}

// A stream that names the other variant, or asks the turbo server for a step
// count only the standard model takes, is refused before any work with
// INVALID_ARGUMENT and a message that says what to do; so is a variant that
// does not exist. Streams and unary calls alike.
TEST_F(VariantServerTest, EachRefusesWhatIsShapedForTheOther) {
  const auto tokens = client::DemoTokens(30, 2);
  auto refused = [&](const std::string& server, const client::StreamOptions& o,
                     const std::string& message) {
    SCOPED_TRACE(server + " <- variant '" + o.model_variant + "', " +
                 std::to_string(o.n_timesteps) + " steps");
    const auto r = Of(server).client->Stream(tokens, o);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(r.status.error_message(), HasSubstr(message));
    EXPECT_TRUE(r.audio.empty());
    v1::VocodeResponse resp;
    const grpc::Status s = Unary(server, o.model_variant, o.n_timesteps, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr(message));
  };
  refused("turbo", Opts("standard"),
          "config.model_variant is \"standard\" but this server serves the \"turbo\" model");
  refused("standard", Opts("turbo"),
          "config.model_variant is \"turbo\" but this server serves the \"standard\" model");
  refused("turbo", Opts("", 10), "distilled for 2 steps");
  refused("turbo", Opts("turbo", 5), "config.n_timesteps must be in 1..4 (0 = default 2)");
  refused("standard", Opts("standard", 51), "config.n_timesteps must be in 1..50");
  refused("standard", Opts("turbo-v2"), "config.model_variant must be");
  refused("turbo", Opts("Turbo"), "config.model_variant must be");
  // What each does serve: its own variant named, or none.
  for (const std::string v : {model::kVariantStandard, model::kVariantTurbo}) {
    const auto r = Of(v).client->Stream(tokens, Opts(v));
    EXPECT_TRUE(r.status.ok()) << v << ": " << r.status.error_message();
    EXPECT_EQ(r.audio.size(), tokens.size() * 960) << v;
  }
}

// The suite's servers schedule by step; a turbo server that runs whole solves
// (--scheduling batch, the default) streams its model's default steps too.
TEST_F(VariantServerTest, TurboServesWholeSolveBatchesToo) {
  config::Config c;
  c.listen = "127.0.0.1:0";
  c.metrics_listen = "";
  c.model_dir = TestTurboModelDir();
  c.scheduling = "batch";
  auto v = model::LoadVocoder(c.model_dir, "cpu");
  ASSERT_TRUE(v.ok()) << v.status();
  auto s = VocoderServer::Start(c, std::move(*v));
  ASSERT_TRUE(s.ok()) << s.status();
  client::VocoderClient client(grpc::CreateChannel("127.0.0.1:" + std::to_string((*s)->port()),
                                                   grpc::InsecureChannelCredentials()));
  const auto tokens = client::DemoTokens(70, 4);
  const auto r = client.Stream(tokens, Opts(model::kVariantTurbo));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.started.n_timesteps(), 2u);
  EXPECT_EQ(r.started.model_variant(), model::kVariantTurbo);
  EXPECT_EQ(r.audio.size(), tokens.size() * 960);
  EXPECT_TRUE(r.gap_free);
}

}  // namespace
}  // namespace vocoder::server

// LoadManifest's variant, range and path checks, and a voice file's tensors as
// VoiceData (gaps seen while writing the oracles of tests/fuzz/manifest_fuzzer
// and voice_fuzzer: a manifest could ask for more harmonics than the runner
// carries phase for, name files outside the model directory, or make
// products overflow; a float prompt_token loaded as no prompt at all).
#include "model/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/vocoder.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::model {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("vocoder_manifest_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    for (const char* f :
         {"encoder.pt", "estimator.pt", "hift_source.pt", "hift_decode.pt", "buffers.pt"}) {
      std::ofstream(dir_ / f).put('x');
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& extra) {
    std::ofstream(dir_ / "manifest.json")
        << R"({"format": "vocoderd-s3gen/1", "device": "cpu", "files": {"encoder.pt": "",
              "estimator.pt": "", "hift_source.pt": "", "hift_decode.pt": "",
              "buffers.pt": ""})"
        << extra << "}";
  }
  absl::StatusOr<Manifest> Load(const std::string& extra) {
    Write(extra);
    return LoadManifest(dir_.string(), /*verify_hashes=*/false);
  }
  absl::StatusOr<Manifest> Read(const std::string& extra) {
    Write(extra);
    return ReadManifest(dir_.string(), /*verify_hashes=*/false);
  }
  std::filesystem::path dir_;
};

TEST_F(ManifestTest, AcceptsTheDefaults) { EXPECT_TRUE(Load("").ok()) << Load("").status(); }

TEST_F(ManifestTest, RejectsConstantsOutsideTheRunnersRanges) {
  EXPECT_THAT(Load(R"(, "harmonics": 10)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("harmonics must be in 1..9")));
  EXPECT_THAT(Load(R"(, "mel_bins": 2000000000)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mel_bins")));
  EXPECT_THAT(Load(R"(, "token_vocab": 7000)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token_vocab")));
  EXPECT_THAT(Load(R"(, "max_row_tokens": 6000)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_row_tokens")));
  EXPECT_THAT(Load(R"(, "cfg_rate": -1)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cfg_rate")));
}

TEST_F(ManifestTest, RejectsPathsOutsideTheModelDirectory) {
  EXPECT_THAT(
      Load(R"(, "voices": ["../other/alice.pt"])"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside the model directory")));
  EXPECT_THAT(
      Load(R"(, "golden": "/etc/passwd")"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside the model directory")));
}

// An export from before variants existed has no `variant`, `estimator_inputs`
// or (older still) sampler fields: it is the standard model.
TEST_F(ManifestTest, ManifestWithoutVariantLoadsAsStandard) {
  for (const std::string& extra :
       {std::string(), std::string(R"(, "n_timesteps": 10, "cfg_rate": 0.7,
                                      "t_schedule": "cosine")")}) {
    auto m = Load(extra);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->variant, "standard");
    EXPECT_EQ(m->n_timesteps, 10);
    EXPECT_DOUBLE_EQ(m->cfg_rate, 0.7);
    EXPECT_EQ(m->t_schedule, "cosine");
    EXPECT_THAT(m->estimator_inputs,
                ::testing::ElementsAre("x", "mask", "mu", "t", "spks", "cond"));
  }
  auto explicit_standard = Load(R"(, "variant": "standard", "n_timesteps": 8, "cfg_rate": 0.5,
      "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond"])");
  ASSERT_TRUE(explicit_standard.ok()) << explicit_standard.status();
  EXPECT_EQ(explicit_standard->n_timesteps, 8);
  EXPECT_DOUBLE_EQ(explicit_standard->cfg_rate, 0.5);
}

TEST_F(ManifestTest, ParsesTurboWithItsSamplerDefaults) {
  // As tools/export_s3gen.py --variant turbo writes it.
  auto m = Read(R"(, "variant": "turbo", "n_timesteps": 2, "cfg_rate": 0.0,
      "t_schedule": "linear", "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond", "r"])");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->variant, "turbo");
  EXPECT_EQ(m->n_timesteps, 2);
  EXPECT_DOUBLE_EQ(m->cfg_rate, 0.0);
  EXPECT_EQ(m->t_schedule, "linear");
  EXPECT_THAT(m->estimator_inputs,
              ::testing::ElementsAre("x", "mask", "mu", "t", "spks", "cond", "r"));
  // Absent sampler fields take the turbo defaults, not the standard ones.
  auto defaults = Read(R"(, "variant": "turbo")");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->n_timesteps, 2);
  EXPECT_DOUBLE_EQ(defaults->cfg_rate, 0.0);
  EXPECT_EQ(defaults->t_schedule, "linear");
  EXPECT_EQ(defaults->estimator_inputs.size(), 7u);
}

// The runners serve turbo (issue 17): LoadManifest, what LoadVocoder and the
// simulator load with, accepts it with its sampler defaults, and the variant
// decides how many estimator rows a job takes.
TEST_F(ManifestTest, LoadsTurboForTheRunners) {
  auto m = Load(R"(, "variant": "turbo")");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->variant, kVariantTurbo);
  EXPECT_EQ(m->n_timesteps, 2);
  EXPECT_EQ(m->t_schedule, "linear");
  EXPECT_TRUE(CheckVariantServed(*m).ok());
  EXPECT_EQ(GuidanceCopies(*m), 1);
  auto standard = Load("");
  ASSERT_TRUE(standard.ok()) << standard.status();
  EXPECT_TRUE(CheckVariantServed(*standard).ok());
  EXPECT_EQ(GuidanceCopies(*standard), 2);
  Manifest other = *standard;
  other.variant = "turbo-v2";  // one ReadManifest would refuse; never served as another
  EXPECT_THAT(CheckVariantServed(other),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not serve")));
}

TEST_F(ManifestTest, RejectsUnknownVariantsAndMismatchedSamplerFields) {
  EXPECT_THAT(Read(R"(, "variant": "turbo-v2")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("variant 'turbo-v2' is not supported (known: standard, turbo)")));
  EXPECT_THAT(Read(R"(, "variant": 2)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed field")));
  EXPECT_THAT(Read(R"(, "t_schedule": "sigmoid")"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("t_schedule 'sigmoid' is not supported")));
  EXPECT_THAT(
      Read(R"(, "t_schedule": "linear")"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit variant 'standard'")));
  EXPECT_THAT(
      Read(R"(, "variant": "turbo", "t_schedule": "cosine")"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit variant 'turbo'")));
  EXPECT_THAT(Read(R"(, "variant": "turbo", "cfg_rate": 0.7)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cfg_rate must be 0 for variant 'turbo'")));
  EXPECT_THAT(Read(R"(, "variant": "turbo",
                    "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond"])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("estimator_inputs")));
  EXPECT_THAT(Read(R"(, "estimator_inputs": ["x", "mask", "mu", "t", "spks", "cond", "r"])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("estimator_inputs")));
}

TEST(VoiceFromTensorsTest, ChecksKindsAndCounts) {
  std::map<std::string, HostTensor> bag;
  bag["prompt_token"] = HostTensor{{1, 2}, {}, {5, 6}};
  bag["prompt_feat"] = HostTensor{{1, 4, 1}, {0.1f, 0.2f, 0.3f, 0.4f}, {}};
  bag["embedding"] = HostTensor{{2}, {1.0f, 2.0f}, {}};
  auto v = VoiceFromTensors(bag, "v.pt");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->prompt_tokens.size(), 2u);
  EXPECT_EQ(v->prompt_feat.size(), 4u);

  auto floats_as_tokens = bag;
  floats_as_tokens["prompt_token"] = HostTensor{{2}, {5.0f, 6.0f}, {}};
  EXPECT_THAT(
      VoiceFromTensors(floats_as_tokens, "v.pt"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'prompt_token' must be integral")));
  auto short_feat = bag;
  short_feat["prompt_feat"].shape = {1, 8, 1};
  EXPECT_THAT(VoiceFromTensors(short_feat, "v.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt_feat")));
  bag.erase("embedding");
  EXPECT_THAT(VoiceFromTensors(bag, "v.pt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lacks 'embedding'")));
}

}  // namespace
}  // namespace vocoder::model

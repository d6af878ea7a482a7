// LoadManifest's range and path checks, and a voice file's tensors as
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
  absl::StatusOr<Manifest> Load(const std::string& extra) {
    std::ofstream(dir_ / "manifest.json")
        << R"({"format": "vocoderd-s3gen/1", "device": "cpu", "files": {"encoder.pt": "",
              "estimator.pt": "", "hift_source.pt": "", "hift_decode.pt": "",
              "buffers.pt": ""})"
        << extra << "}";
    return LoadManifest(dir_.string(), /*verify_hashes=*/false);
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

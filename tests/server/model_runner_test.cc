// The batcher wired to the real model runner (tiny S3Gen on CPU): streams with
// equal voice content batch together whatever object holds the voice, every
// job completes with its own audio, and a poison job fails only its half.
#include "server/model_runner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "tests/testing/status_matchers.h"
#include "tests/testing/test_model.h"

namespace vocoder::server {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

using vocoder::testing::TestModelDir;

struct Results {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, absl::Status> status;
  std::map<int, std::vector<float>> audio;
  std::map<int, int> batch_size;
  void Wait(size_t n) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return status.size() >= n; });
  }
};

class ModelRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = model::LoadVocoder(TestModelDir(), "cpu");
    ASSERT_TRUE(v.ok()) << v.status();
    vocoder_ = std::move(*v);
    runner_ = std::make_unique<ModelBatchRunner>(*vocoder_);
    const auto& voices = vocoder_->manifest().voices;
    ASSERT_GE(voices.size(), 2u);
    for (int i = 0; i < 2; ++i) {
      auto data = model::ReadVoiceFile(vocoder_->manifest().Path(voices[i]));
      ASSERT_TRUE(data.ok()) << data.status();
      data_.push_back(*data);
    }
  }

  std::unique_ptr<batcher::Job> Make(int id, int stream, const model::VoiceData& voice_data,
                                     std::vector<int64_t> tokens) {
    auto voice = vocoder_->PrepareVoice(voice_data);  // a fresh object each time
    EXPECT_TRUE(voice.ok());
    model::VocodeJob job;
    job.voice = *voice;
    job.tokens = std::move(tokens);
    return std::make_unique<ModelJob>(
        std::move(job), VoiceFingerprint(voice_data), 4, static_cast<uint64_t>(stream),
        batcher::kNever, nullptr,
        [this, id](absl::Status s, const batcher::BatchInfo& info, model::VocodeJob& j) {
          std::lock_guard lock(results_.mu);
          results_.status[id] = s;
          results_.audio[id] = j.audio;
          results_.batch_size[id] = info.batch_size;
          results_.cv.notify_all();
        });
  }

  static std::vector<int64_t> Tokens(int n, int seed) {
    std::vector<int64_t> t;
    for (int i = 0; i < n; ++i) t.push_back((seed * 31 + i * 97) % 6561);
    return t;
  }

  std::unique_ptr<model::Vocoder> vocoder_;
  std::unique_ptr<ModelBatchRunner> runner_;
  std::vector<model::VoiceData> data_;
  Results results_;
};

TEST_F(ModelRunnerTest, EqualVoiceContentGetsEqualFingerprints) {
  model::VoiceData copy = data_[0];
  EXPECT_EQ(VoiceFingerprint(copy), VoiceFingerprint(data_[0]));
  EXPECT_NE(VoiceFingerprint(data_[0]), VoiceFingerprint(data_[1]));
  copy.embedding[0] += 1e-3f;
  EXPECT_NE(VoiceFingerprint(copy), VoiceFingerprint(data_[0]));
}

TEST_F(ModelRunnerTest, BatchesStreamsAndCompletesEachWithItsOwnAudio) {
  batcher::SystemClock clock;
  batcher::BatcherOptions o;
  o.grouping = batcher::Grouping::kVoice;
  o.idle_grace = std::chrono::milliseconds(50);  // all_ready decides, not a slow machine
  auto b = batcher::Batcher::Create(o, {clock, *runner_, nullptr});
  ASSERT_TRUE(b.ok());
  constexpr int kStreams = 6;
  for (int s = 0; s < kStreams; ++s) (*b)->StreamOpened();
  std::vector<std::unique_ptr<batcher::Job>> jobs;
  for (int s = 0; s < kStreams; ++s)
    jobs.push_back(Make(s, s, data_[s % 2], Tokens(12 + s % 3, s)));
  for (auto& job : jobs) ASSERT_TRUE((*b)->Submit(&job).ok());
  results_.Wait(kStreams);
  (*b)->Shutdown();
  const auto stats = (*b)->stats();
  EXPECT_EQ(stats.completed_ok, kStreams);
  // Two voices, each held by three different objects: two batches of three.
  EXPECT_EQ(stats.batches, 2) << "voices with equal content must share batches";
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(results_.status[s].ok()) << results_.status[s];
    // The same job alone, straight through the model.
    auto voice = vocoder_->PrepareVoice(data_[s % 2]);
    model::VocodeJob alone;
    alone.voice = *voice;
    alone.tokens = Tokens(12 + s % 3, s);
    model::VocodeJob* row = &alone;
    ASSERT_TRUE(vocoder_->Run(absl::MakeConstSpan(&row, 1), 4).ok());
    ASSERT_EQ(results_.audio[s].size(), alone.audio.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < alone.audio.size(); ++i) {
      num += std::pow(double(results_.audio[s][i]) - alone.audio[i], 2);
      den += std::pow(double(alone.audio[i]), 2);
    }
    EXPECT_LT(std::sqrt(num / den), 1e-4) << "stream " << s;
  }
}

TEST_F(ModelRunnerTest, PoisonJobFailsOnlyItsHalf) {
  batcher::SystemClock clock;
  batcher::BatcherOptions o;
  o.grouping = batcher::Grouping::kMixed;
  auto b = batcher::Batcher::Create(o, {clock, *runner_, nullptr});
  ASSERT_TRUE(b.ok());
  for (int s = 0; s < 4; ++s) (*b)->StreamOpened();
  for (int s = 0; s < 4; ++s) {
    std::vector<int64_t> tokens = Tokens(10, s);
    if (s == 3) tokens[2] = 9999;  // reaches the runner: it validates too
    auto job = Make(s, s, data_[s % 2], tokens);
    ASSERT_TRUE((*b)->Submit(&job).ok());
  }
  results_.Wait(4);
  (*b)->Shutdown();
  EXPECT_THAT(results_.status[3],
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token 2 is 9999")));
  int ok = 0;
  for (int s = 0; s < 3; ++s) ok += results_.status[s].ok();
  EXPECT_GE(ok, 1) << "jobs outside the poisoned half must succeed";
}

}  // namespace
}  // namespace vocoder::server

// The simulated accelerator keeps the LibTorch runner's contract: on the tiny
// export, for the same jobs, the same emitted frames, audio, source and cache
// lengths, and for bad jobs the same errors, word for word.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <mutex>

#include "model/sim_vocoder.h"
#include "model/vocoder.h"
#include "tests/testing/test_model.h"

namespace vocoder::model {
namespace {

class InstantClock final : public SimClock {
 public:
  TimePoint Now() override { return TimePoint{}; }
  void SleepUntil(TimePoint) override {}
};

constexpr char kProfile[] = R"({"format": "vocoderd-sim-profile/1", "name": "t",
  "stages": {"encoder": {"overhead_ms": 1}, "estimator": {"overhead_ms": 1},
             "hift": {"overhead_ms": 1}}})";

struct Spec {
  int voice;  // 0 alice, 1 bob
  int tokens;
  int context;
  bool finalize;
  int cache_frames;
  int64_t noise_offset;
};

class SimContractTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto real = LoadVocoder(testing::TestModelDir(), "cpu");
    ASSERT_TRUE(real.ok()) << real.status();
    real_ = real->release();
    auto profile = ParseSimProfile(kProfile, "test");
    ASSERT_TRUE(profile.ok()) << profile.status();
    sim_ = new SimVocoder(real_->manifest(), *profile, &clock_);
    for (const char* name : {"alice", "bob"}) {
      auto data = ReadVoiceFile(testing::TestModelDir() + "/voices/" + name + ".pt");
      ASSERT_TRUE(data.ok()) << data.status();
      auto r = real_->PrepareVoice(*data);
      auto s = sim_->PrepareVoice(*data);
      ASSERT_TRUE(r.ok() && s.ok());
      real_voices_.push_back(*r);
      sim_voices_.push_back(*s);
    }
  }
  static void TearDownTestSuite() {
    delete sim_;
    delete real_;
  }

  static std::vector<VocodeJob> Jobs(const std::vector<Spec>& specs, bool sim) {
    std::vector<VocodeJob> jobs;
    for (const Spec& s : specs) {
      VocodeJob j;
      j.voice = (sim ? sim_voices_ : real_voices_)[static_cast<size_t>(s.voice)];
      for (int i = 0; i < s.tokens; ++i) j.tokens.push_back((i * 131 + s.tokens) % 6561);
      j.context_tokens = s.context;
      j.finalize = s.finalize;
      j.noise_offset = s.noise_offset;
      j.mel_cache.assign(static_cast<size_t>(s.cache_frames * 80), -6.0f);
      j.source_cache.assign(static_cast<size_t>(s.cache_frames * 480), 0.0f);
      jobs.push_back(std::move(j));
    }
    return jobs;
  }
  static absl::Status RunOn(Vocoder& v, std::vector<VocodeJob>& jobs, int steps) {
    std::vector<VocodeJob*> ptrs;
    for (auto& j : jobs) ptrs.push_back(&j);
    return v.Run(ptrs, steps);
  }

  static InstantClock clock_;
  static Vocoder* real_;
  static SimVocoder* sim_;
  static std::vector<std::shared_ptr<const Voice>> real_voices_, sim_voices_;
};

InstantClock SimContractTest::clock_;
Vocoder* SimContractTest::real_ = nullptr;
SimVocoder* SimContractTest::sim_ = nullptr;
std::vector<std::shared_ptr<const Voice>> SimContractTest::real_voices_,
    SimContractTest::sim_voices_;

TEST_F(SimContractTest, SameLengthsAsTheRunnerForEveryJobOfAMixedBatch) {
  // A stream's first job, a middle job with context and caches, a backlog
  // job, a final job with silence lookahead, a short final one, two voices.
  const std::vector<Spec> specs = {{0, 25, 0, false, 0, 0},    {1, 53, 25, false, 8, 44},
                                   {0, 78, 25, false, 8, 100}, {1, 31, 25, true, 8, 150},
                                   {0, 7, 0, true, 0, 0},      {1, 12, 4, false, 8, 20}};
  auto real_jobs = Jobs(specs, false);
  auto sim_jobs = Jobs(specs, true);
  ASSERT_TRUE(RunOn(*real_, real_jobs, 2).ok());
  ASSERT_TRUE(RunOn(*sim_, sim_jobs, 2).ok());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(sim_jobs[i].mel.size(), real_jobs[i].mel.size());
    EXPECT_EQ(sim_jobs[i].audio.size(), real_jobs[i].audio.size());
    EXPECT_EQ(sim_jobs[i].source.size(), real_jobs[i].source.size());
    EXPECT_EQ(sim_jobs[i].tokens, real_jobs[i].tokens);  // PrepareJob ran on both
    EXPECT_GT(sim_jobs[i].emitted_frames(), 0);
  }
}

TEST_F(SimContractTest, StagesReportTheSameRowsAndSteps) {
  const std::vector<Spec> specs = {{0, 25, 0, false, 0, 0}, {1, 40, 10, true, 8, 30}};
  auto real_jobs = Jobs(specs, false);
  auto sim_jobs = Jobs(specs, true);
  std::vector<VocodeJob*> rp, sp;
  for (auto& j : real_jobs) rp.push_back(&j);
  for (auto& j : sim_jobs) sp.push_back(&j);
  auto rb = real_->NewFlowBatch();
  auto sb = sim_->NewFlowBatch();
  auto rids = real_->Admit(*rb, rp, {3, 2});
  auto sids = sim_->Admit(*sb, sp, {3, 2});
  ASSERT_TRUE(rids.ok() && sids.ok());
  EXPECT_EQ(*sids, *rids);
  EXPECT_EQ(sb->rows(), rb->rows());
  EXPECT_EQ(sb->padded_frames(), rb->padded_frames());
  while (rb->pending_rows() > 0) {
    ASSERT_TRUE(real_->Step(*rb).ok());
    ASSERT_TRUE(sim_->Step(*sb).ok());
    for (RowId id : *rids) {
      EXPECT_EQ(sb->steps_taken(id), rb->steps_taken(id));
      EXPECT_EQ(sb->frames(id), rb->frames(id));
    }
  }
  EXPECT_EQ(sb->pending_rows(), 0);
  // Retire with a wrong job count fails the same way on both.
  std::vector<VocodeJob*> one_real = {rp[0]}, one_sim = {sp[0]};
  EXPECT_EQ(sim_->Retire(*sb, *sids, one_sim), real_->Retire(*rb, *rids, one_real));
}

TEST_F(SimContractTest, BadJobsGiveTheRunnersErrors) {
  struct Bad {
    const char* what;
    std::function<void(VocodeJob&)> mutate;
  };
  const std::vector<Bad> bad = {
      {"token id", [](VocodeJob& j) { j.tokens[2] = 6563; }},
      {"only sos/eos",
       [](VocodeJob& j) {
         j.tokens = {kSosToken, kEosToken};
       }},
      {"context", [](VocodeJob& j) { j.context_tokens = 99; }},
      {"no frame",
       [](VocodeJob& j) {
         j.tokens.resize(3);
         j.context_tokens = 2;
         j.finalize = false;
       }},
      {"noise", [](VocodeJob& j) { j.noise_offset = -1; }},
      {"phase", [](VocodeJob& j) { j.hift_phase[0] = 0.5f; }},
      {"mel cache", [](VocodeJob& j) { j.mel_cache.resize(81); }},
      {"source cache", [](VocodeJob& j) { j.source_cache.resize(1000000); }},
      {"too long", [](VocodeJob& j) { j.tokens.assign(2480, 5); }},
      {"no voice", [](VocodeJob& j) { j.voice = nullptr; }},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    auto real_jobs = Jobs({{0, 30, 5, true, 0, 0}, {1, 30, 5, true, 0, 0}}, false);
    auto sim_jobs = Jobs({{0, 30, 5, true, 0, 0}, {1, 30, 5, true, 0, 0}}, true);
    b.mutate(real_jobs[1]);
    b.mutate(sim_jobs[1]);
    const absl::Status r = RunOn(*real_, real_jobs, 2);
    const absl::Status s = RunOn(*sim_, sim_jobs, 2);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(s, r);
  }
  // Voices: the same validation, and each runner refuses the other's voices.
  VoiceData empty_embedding = real_voices_[0]->data;
  empty_embedding.embedding.assign(192, 0.0f);
  EXPECT_EQ(sim_->PrepareVoice(empty_embedding).status(),
            real_->PrepareVoice(empty_embedding).status());
  auto crossed = Jobs({{0, 30, 5, true, 0, 0}}, true);
  EXPECT_THAT(RunOn(*real_, crossed, 2).message(),
              ::testing::HasSubstr("voice was not prepared by this runner"));
  auto empty = std::vector<VocodeJob>{};
  EXPECT_EQ(RunOn(*sim_, empty, 2), RunOn(*real_, empty, 2));
}

}  // namespace
}  // namespace vocoder::model

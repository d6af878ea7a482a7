// The simulated accelerator without the real model: profile arithmetic and
// parsing, predicted stage times for known shapes, sleeping through an
// injected clock (no real sleep), determinism, output geometry and the
// shared validation. The contract against the LibTorch runner (same lengths,
// same errors) is sim_contract_test.cc.
#include "model/sim_vocoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <mutex>

#include "tests/testing/status_matchers.h"

namespace vocoder::model {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

// Records every sleep and returns at once: simulated time only.
class FakeSimClock final : public SimClock {
 public:
  TimePoint Now() override {
    std::lock_guard lock(mu_);
    return now_;
  }
  void SleepUntil(TimePoint t) override {
    std::lock_guard lock(mu_);
    sleeps.push_back(t > now_ ? t - now_ : TimePoint::duration::zero());
    if (t > now_) now_ = t;
  }
  std::vector<TimePoint::duration> sleeps;

 private:
  std::mutex mu_;
  TimePoint now_{};
};

// A profile with simple round numbers: encoder 1 ms + 0.01 ms per row-token,
// estimator 2 ms + 0.001 ms per row-frame, HiFT 0.1 ms per row-frame, 0.5 ms
// run overhead.
constexpr char kRoundProfile[] = R"({
  "format": "vocoderd-sim-profile/1", "name": "round", "run_overhead_ms": 0.5,
  "stages": {
    "encoder": {"overhead_ms": 1, "ms_per_unit": 0.01},
    "estimator": {"overhead_ms": 2, "ms_per_unit": 0.001},
    "hift": {"ms_per_unit": 0.1}
  }})";

Manifest TinyGeometry() {
  Manifest m;  // the defaults are S3Gen's geometry
  m.size = "tiny";
  m.device = "cpu";
  return m;
}

VoiceData MakeVoice(int prompt_tokens, float seed) {
  VoiceData v;
  for (int i = 0; i < prompt_tokens; ++i) v.prompt_tokens.push_back((i * 37 + 11) % 6561);
  v.prompt_feat.assign(static_cast<size_t>(2 * prompt_tokens * 80), -6.0f);
  for (int i = 0; i < 192; ++i) v.embedding.push_back(seed + 0.01f * static_cast<float>(i));
  return v;
}

VocodeJob Job(std::shared_ptr<const Voice> voice, int tokens, int context, bool finalize,
              int cache_frames = 0) {
  VocodeJob j;
  j.voice = std::move(voice);
  for (int i = 0; i < tokens; ++i) j.tokens.push_back((i * 101 + 7) % 6561);
  j.context_tokens = context;
  j.finalize = finalize;
  j.noise_offset = 200;
  j.mel_cache.assign(static_cast<size_t>(cache_frames * 80), -5.0f);
  j.source_cache.assign(static_cast<size_t>(cache_frames * 480), 0.25f);
  return j;
}

SimProfile Round() {
  auto p = ParseSimProfile(kRoundProfile, "test");
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

TEST(SimProfileTest, AffineTermsPredictKnownShapes) {
  const SimProfile p = Round();
  EXPECT_DOUBLE_EQ(p.encoder.PredictMs(4, 100), 1 + 0.01 * 400);
  EXPECT_DOUBLE_EQ(p.estimator.PredictMs(8, 200), 2 + 0.001 * 1600);
  EXPECT_DOUBLE_EQ(p.hift.PredictMs(2, 58), 0.1 * 116);
}

TEST(SimProfileTest, FlopTermsUseEfficiencyKneeAndFloor) {
  StageCost c;
  c.flop_linear = 1e9;  // 1 GFLOP per row-frame
  c.peak_tflops = 100;
  c.efficiency_max = 0.5;
  c.efficiency_knee_units = 1000;
  c.floor_ms = 0.05;
  // 2000 units, past the knee: 2 TFLOP at 50 TFLOP/s = 40 ms.
  EXPECT_NEAR(c.PredictMs(2, 1000), 40.0, 1e-9);
  // 100 units: 0.1 TFLOP at 100 * 0.05 TFLOP/s = 20 ms (a tenth of the efficiency).
  EXPECT_NEAR(c.PredictMs(1, 100), 20.0, 1e-9);
  // Below the knee time stays flat: 1 unit is 1 GFLOP at 0.05 % efficiency.
  EXPECT_NEAR(c.PredictMs(1, 1), 20.0, 1e-9);
  c.floor_ms = 25;
  EXPECT_NEAR(c.PredictMs(1, 1), 25.0, 1e-9);
  c.flop_quadratic = 1e6;  // adds 1e6 * len per row-frame
  EXPECT_NEAR(c.PredictMs(2, 1000), 80.0, 1e-9);
}

TEST(SimProfileTest, RejectsMalformedProfiles) {
  EXPECT_THAT(ParseSimProfile("{", "x.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x.json is not valid JSON")));
  EXPECT_THAT(ParseSimProfile(R"({"format": "other", "name": "a"})", "x.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a simulator profile")));
  std::string negative = kRoundProfile;
  negative.replace(negative.find("\"ms_per_unit\": 0.01"), 19, "\"ms_per_unit\": -1");
  EXPECT_THAT(ParseSimProfile(negative, "x.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("stages.encoder.ms_per_unit must be >= 0")));
  std::string no_hift = kRoundProfile;
  no_hift.replace(no_hift.find("\"hift\""), 6, "\"hoft\"");
  EXPECT_THAT(ParseSimProfile(no_hift, "x.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stages.hift is missing")));
  std::string zero = kRoundProfile;
  zero.replace(zero.find("{\"ms_per_unit\": 0.1}"), 20, "{}");
  EXPECT_THAT(ParseSimProfile(zero, "x.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("predicts no time")));
}

TEST(SimProfileTest, DeviceNamesSelectProfiles) {
  EXPECT_TRUE(IsSimDevice("sim"));
  EXPECT_TRUE(IsSimDevice("sim:cpu-tiny"));
  EXPECT_FALSE(IsSimDevice("cpu"));
  EXPECT_FALSE(IsSimDevice("simulator"));
  auto shipped = ShippedSimProfiles();
  EXPECT_THAT(shipped,
              ::testing::IsSupersetOf({"h200-estimate", "h200-turbo-estimate", "cpu-tiny"}));
  auto def = LoadSimProfile("sim");
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(def->name, "h200-estimate");
  EXPECT_TRUE(def->estimate);
  auto tiny = LoadSimProfile("sim:cpu-tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->name, "cpu-tiny");
  EXPECT_FALSE(tiny->estimate);
  EXPECT_THAT(LoadSimProfile("sim:a100"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("shipped: ")));
  EXPECT_THAT(LoadSimProfile("sim:/no/such/profile.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/no/such/profile.json")));
  const std::string path = ::testing::TempDir() + "/round.json";
  std::ofstream(path) << kRoundProfile;
  auto file = LoadSimProfile("sim:" + path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->name, "round");
  std::remove(path.c_str());
}

// The estimate's check from the issue: 32 streaming jobs with 10 s prompts
// (250 + 25 context + 25 new + 3 lookahead tokens; 8 HiFT cache frames) cost
// about 230 ms, so about 140 real-time streams fit.
TEST(SimProfileTest, H200EstimateMatchesTheDesignArithmetic) {
  auto p = LoadSimProfile("sim:h200-estimate");
  ASSERT_TRUE(p.ok()) << p.status();
  SimVocoder sim(TinyGeometry(), *p);
  const double ms =
      std::chrono::duration<double, std::milli>(sim.PredictRun(32, 303, 58, 10)).count();
  EXPECT_NEAR(ms, 230, 15);
  const double streams = 32 / (ms / 1e3);  // one second of audio per job
  EXPECT_NEAR(streams, 140, 10);
  // A lone chunk is launch-bound: about 4 ms per step, ~50 ms in all.
  const double lone =
      std::chrono::duration<double, std::milli>(sim.PredictRun(1, 303, 58, 10)).count();
  EXPECT_NEAR(lone, 50, 10);
}

// The Turbo estimate (docs/simulator.md): the same per-row stage costs as
// h200-estimate; a Turbo job makes 2 estimator calls of one row each (no CFG),
// so 32 streaming jobs cost about 58 ms (about 550 real-time streams) and a
// lone chunk about 15.5 ms: by the stage costs summed directly, and by a
// SimVocoder on a turbo manifest.
TEST(SimProfileTest, H200TurboEstimateMatchesTheDesignArithmetic) {
  auto turbo = LoadSimProfile("sim:h200-turbo-estimate");
  ASSERT_TRUE(turbo.ok()) << turbo.status();
  EXPECT_TRUE(turbo->estimate);
  auto standard = LoadSimProfile("sim:h200-estimate");
  ASSERT_TRUE(standard.ok()) << standard.status();
  for (int64_t rows : {1, 16, 64}) {
    EXPECT_EQ(turbo->estimator.PredictMs(rows, 600), standard->estimator.PredictMs(rows, 600));
  }
  auto batch_ms = [&](int64_t jobs) {
    return turbo->encoder.PredictMs(jobs, 303) + 2 * turbo->estimator.PredictMs(jobs, 600) +
           turbo->hift.PredictMs(jobs, 58) + turbo->run_overhead_ms;
  };
  EXPECT_NEAR(batch_ms(32), 58, 2);
  EXPECT_NEAR(32 / (batch_ms(32) / 1e3), 553, 20);
  EXPECT_NEAR(batch_ms(1), 15.5, 1);
  Manifest m = TinyGeometry();
  m.variant = kVariantTurbo;
  SimVocoder sim(m, *turbo);
  for (int64_t jobs : {1, 32}) {
    const double run_ms =
        std::chrono::duration<double, std::milli>(sim.PredictRun(jobs, 303, 58, 2)).count();
    EXPECT_NEAR(run_ms, batch_ms(jobs), 1e-3) << jobs << " jobs";
  }
}

// A turbo model on the simulated device: Step charges one estimator row per
// pending job (no CFG doubling), where the standard model charges two.
TEST(SimVocoderTest, TurboStepsChargeRowsWithoutCfgDoubling) {
  auto ms = [](double v) { return nanoseconds(std::llround(v * 1e6)); };
  for (const char* variant : {kVariantStandard, kVariantTurbo}) {
    SCOPED_TRACE(variant);
    const bool turbo = std::string(variant) == kVariantTurbo;
    FakeSimClock clock;
    Manifest m = TinyGeometry();
    m.variant = variant;
    m.n_timesteps = turbo ? 2 : 10;
    SimVocoder sim(m, Round(), &clock);
    EXPECT_EQ(sim.PredictStep(3, 200), ms(2 + 0.001 * (turbo ? 3 : 6) * 200));
    auto voice = sim.PrepareVoice(MakeVoice(50, 1));
    ASSERT_TRUE(voice.ok());
    // Rows: 50 + 53 = 103 tokens, 200 frames; 50 + 28 = 78 tokens, 150 frames.
    VocodeJob a = Job(*voice, 53, 25, false, 8), b = Job(*voice, 28, 0, false);
    auto batch = sim.NewFlowBatch();
    std::vector<VocodeJob*> pa = {&a};
    ASSERT_TRUE(sim.Admit(*batch, pa, {2}).ok());
    ASSERT_TRUE(sim.Step(*batch).ok());
    EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * (turbo ? 1 : 2) * 200));
    std::vector<VocodeJob*> pb = {&b};
    ASSERT_TRUE(sim.Admit(*batch, pb, {2}).ok());  // joins at step 1
    ASSERT_TRUE(sim.Step(*batch).ok());            // 2 rows at 200 padded frames
    EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * (turbo ? 2 : 4) * 200));
    ASSERT_TRUE(sim.Step(*batch).ok());  // b alone; a is done
    EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * (turbo ? 1 : 2) * 200));
    // A whole Run: encoder, n steps of 4 rows (8 with CFG), HiFT.
    std::vector<VocodeJob> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back(Job(*voice, 53, 25, false, 8));
    std::vector<VocodeJob*> ptrs;
    for (auto& j : jobs) ptrs.push_back(&j);
    const size_t before = clock.sleeps.size();
    ASSERT_TRUE(sim.Run(ptrs, m.n_timesteps).ok());
    ASSERT_EQ(clock.sleeps.size(), before + 2 + static_cast<size_t>(m.n_timesteps));
    EXPECT_EQ(clock.sleeps[before + 1], ms(2 + 0.001 * (turbo ? 4 : 8) * 200));
  }
}

TEST(SimVocoderTest, RunSleepsThePredictedStageTimesOnTheInjectedClock) {
  FakeSimClock clock;
  SimVocoder sim(TinyGeometry(), Round(), &clock);
  auto voice = sim.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(voice.ok()) << voice.status();
  // Row tokens 50 + 53 = 103; frames 206 - 6 = 200; HiFT 8 + 50 frames.
  std::vector<VocodeJob> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(Job(*voice, 53, 25, false, 8));
  std::vector<VocodeJob*> ptrs;
  for (auto& j : jobs) ptrs.push_back(&j);
  ASSERT_TRUE(sim.Run(ptrs, 10).ok());
  ASSERT_EQ(clock.sleeps.size(), 12u);  // encoder, 10 steps, HiFT
  EXPECT_EQ(clock.sleeps[0], nanoseconds(std::llround((1 + 0.01 * 4 * 103) * 1e6)));
  for (int s = 1; s <= 10; ++s) {
    EXPECT_EQ(clock.sleeps[s], nanoseconds(std::llround((2 + 0.001 * 8 * 200) * 1e6)));
  }
  EXPECT_EQ(clock.sleeps[11], nanoseconds(std::llround((0.5 + 0.1 * 4 * 58) * 1e6)));
  EXPECT_EQ(sim.simulated_busy(), sim.PredictRun(4, 103, 58, 10));
}

// jitter_cv: each stage call takes the prediction times a lognormal factor
// of mean 1 and that coefficient of variation, the same sequence every time.
TEST(SimVocoderTest, JitterVariesEachCallAroundThePredictionReproducibly) {
  std::string doc = kRoundProfile;
  doc.replace(doc.find("\"run_overhead_ms\""), 0, "\"jitter_cv\": 0.2, ");
  auto profile = ParseSimProfile(doc, "jitter.json");
  ASSERT_TRUE(profile.ok()) << profile.status();
  EXPECT_EQ(profile->jitter_cv, 0.2);
  auto factors = [&] {
    FakeSimClock clock;
    SimVocoder sim(TinyGeometry(), *profile, &clock);
    auto voice = sim.PrepareVoice(MakeVoice(50, 1));
    EXPECT_TRUE(voice.ok());
    std::vector<double> f;
    for (int i = 0; i < 100; ++i) {
      VocodeJob job = Job(*voice, 53, 25, false, 8);
      VocodeJob* ptr = &job;
      EXPECT_TRUE(sim.Run({&ptr, 1}, 10).ok());
    }
    const double step = (2 + 0.001 * 2 * 200) * 1e6;  // ns, every sleep but encoder/HiFT
    for (size_t i = 0; i < clock.sleeps.size(); ++i) {
      if (i % 12 == 0 || i % 12 == 11) continue;
      f.push_back(static_cast<double>(nanoseconds(clock.sleeps[i]).count()) / step);
    }
    return f;
  };
  const std::vector<double> a = factors();
  ASSERT_EQ(a.size(), 1000u);
  double sum = 0, sq = 0;
  for (double x : a) {
    sum += x;
    sq += x * x;
  }
  const double mean = sum / 1000;
  const double cv = std::sqrt(sq / 1000 - mean * mean) / mean;
  EXPECT_NEAR(mean, 1.0, 0.03);  // 3 standard errors of 1000 draws
  EXPECT_NEAR(cv, 0.2, 0.03);
  EXPECT_EQ(a, factors());  // seeded: the same run gives the same times
  std::string bad = kRoundProfile;
  bad.replace(bad.find("\"run_overhead_ms\""), 0, "\"jitter_cv\": -0.1, ");
  EXPECT_THAT(ParseSimProfile(bad, "x.json"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                       HasSubstr("jitter_cv must be in [0, 1]")));
}

TEST(SimVocoderTest, HiftCostsEachLengthGroupApart) {
  FakeSimClock clock;
  SimVocoder sim(TinyGeometry(), Round(), &clock);
  auto voice = sim.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(voice.ok());
  std::vector<VocodeJob> jobs = {Job(*voice, 53, 25, false, 8), Job(*voice, 28, 0, false)};
  std::vector<VocodeJob*> ptrs = {&jobs[0], &jobs[1]};
  ASSERT_TRUE(sim.Run(ptrs, 2).ok());
  // HiFT: 58 frames (one row) and 50 frames (one row), plus the run overhead.
  EXPECT_EQ(clock.sleeps.back(), nanoseconds(std::llround((0.5 + 0.1 * 58 + 0.1 * 50) * 1e6)));
}

// The running set: Admit sleeps the encoder for the new rows only, Step the
// estimator for the pending rows at the set's padded frames, Retire the run
// overhead plus HiFT per length group; Drop takes no time.
TEST(SimVocoderTest, RunningSetStagesSleepTheirShapes) {
  FakeSimClock clock;
  SimVocoder sim(TinyGeometry(), Round(), &clock);
  auto voice = sim.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(voice.ok());
  auto ms = [](double v) { return nanoseconds(std::llround(v * 1e6)); };
  // Rows: 50 + 53 = 103 tokens, 200 frames; 50 + 28 = 78 tokens, 150 frames.
  VocodeJob a = Job(*voice, 53, 25, false, 8), b = Job(*voice, 28, 0, false),
            c = Job(*voice, 53, 25, false, 8);
  auto batch = sim.NewFlowBatch();
  std::vector<VocodeJob*> pa = {&a};
  auto ia = sim.Admit(*batch, pa, {1});
  ASSERT_TRUE(ia.ok());
  EXPECT_EQ(clock.sleeps.back(), ms(1 + 0.01 * 1 * 103));
  std::vector<VocodeJob*> pbc = {&b, &c};
  auto ibc = sim.Admit(*batch, pbc, {3, 2});
  ASSERT_TRUE(ibc.ok());
  EXPECT_EQ(*ibc, (std::vector<RowId>{1, 2}));
  EXPECT_EQ(clock.sleeps.back(), ms(1 + 0.01 * 2 * 103));  // the new rows, padded to 103
  EXPECT_EQ(batch->padded_frames(), 200);
  ASSERT_TRUE(sim.Step(*batch).ok());
  EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * 6 * 200));  // 3 rows, CFG doubled
  ASSERT_TRUE(sim.Step(*batch).ok());                       // row 0 (n = 1) is done: 2 rows pending
  EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * 4 * 200));
  const size_t sleeps = clock.sleeps.size();
  ASSERT_TRUE(sim.Drop(*batch, {2}).ok());
  EXPECT_EQ(clock.sleeps.size(), sleeps);
  EXPECT_EQ(batch->padded_frames(), 200);  // row 0, done, still holds 200 frames
  ASSERT_TRUE(sim.Step(*batch).ok());      // row 1 alone
  EXPECT_EQ(clock.sleeps.back(), ms(2 + 0.001 * 2 * 200));
  const size_t before_empty_step = clock.sleeps.size();
  ASSERT_TRUE(sim.Step(*batch).ok());  // nothing pending: no work
  EXPECT_EQ(clock.sleeps.size(), before_empty_step);
  std::vector<VocodeJob*> pab = {&a, &b};
  ASSERT_TRUE(sim.Retire(*batch, {(*ia)[0], (*ibc)[0]}, pab).ok());
  // HiFT: 8 + 50 frames and 50 frames, apart, plus the run overhead.
  EXPECT_EQ(clock.sleeps.back(), ms(0.5 + 0.1 * 58 + 0.1 * 50));
  EXPECT_EQ(batch->rows(), 0);
  EXPECT_EQ(batch->padded_frames(), 0);
  EXPECT_EQ(a.audio.size(), 58u * 480);
  EXPECT_EQ(b.audio.size(), 50u * 480);
}

TEST(SimVocoderTest, OutputsHaveTheRunnerGeometryAndAreDeterministic) {
  FakeSimClock clock;
  SimVocoder sim(TinyGeometry(), Round(), &clock);
  auto voice = sim.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(voice.ok());
  VocodeJob a = Job(*voice, 53, 25, false, 8), b = Job(*voice, 53, 25, false, 8);
  std::vector<VocodeJob*> pa = {&a}, pb = {&b};
  ASSERT_TRUE(sim.Run(pa, 10).ok());
  ASSERT_TRUE(sim.Run(pb, 10).ok());
  // F = 2 * 53 - 6 - 2 * 25 = 50 emitted frames; audio covers 8 cache + 50.
  EXPECT_EQ(a.emitted_frames(), 50);
  EXPECT_EQ(a.mel.size(), 50u * 80);
  EXPECT_EQ(a.audio.size(), 58u * 480);
  EXPECT_EQ(a.source.size(), 58u * 480);
  EXPECT_EQ(a.audio, b.audio);
  EXPECT_EQ(a.mel, b.mel);
  // The cached source overwrites the start of the new one, as in HiFT.
  EXPECT_EQ(a.source[0], 0.25f);
  EXPECT_EQ(a.source[8 * 480 - 1], 0.25f);
  // Not trivial: the tone at absolute positions from the first cached frame.
  const int period = SimTonePeriod((*voice)->data);
  const int64_t first = 480 * (200 + 2 * 25 - 8);
  double energy = 0;
  for (size_t s = 0; s < a.audio.size(); ++s) {
    ASSERT_EQ(a.audio[s], SimToneSample(period, first + static_cast<int64_t>(s))) << s;
    energy += a.audio[s] * a.audio[s];
  }
  EXPECT_NEAR(energy / static_cast<double>(a.audio.size()), 0.125, 0.01);  // 0.5 amplitude sine
}

TEST(SimVocoderTest, VoicesGetDifferentTones) {
  EXPECT_NE(SimTonePeriod(MakeVoice(50, 1)), SimTonePeriod(MakeVoice(50, 2)));
  EXPECT_EQ(SimTonePeriod(MakeVoice(50, 1)), SimTonePeriod(MakeVoice(50, 1)));
}

TEST(SimVocoderTest, ValidatesLikeTheRunner) {
  FakeSimClock clock;
  SimVocoder sim(TinyGeometry(), Round(), &clock);
  VoiceData bad = MakeVoice(50, 1);
  bad.embedding.pop_back();
  EXPECT_THAT(sim.PrepareVoice(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("embedding has 191")));
  auto voice = sim.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(voice.ok());
  VocodeJob j = Job(*voice, 10, 0, true);
  j.tokens[3] = 7000;
  std::vector<VocodeJob*> p = {&j};
  EXPECT_THAT(sim.Run(p, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job 0: token 3 is 7000")));
  VocodeJob ok = Job(*voice, 10, 0, true);
  std::vector<VocodeJob*> q = {&ok};
  EXPECT_THAT(sim.Run(q, 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("n_timesteps must be in 1..100")));
  // A voice from another runner (here: another simulator) is refused.
  SimVocoder other(TinyGeometry(), Round(), &clock);
  auto foreign = other.PrepareVoice(MakeVoice(50, 1));
  ASSERT_TRUE(foreign.ok());
  VocodeJob f = Job(*foreign, 10, 0, true);
  std::vector<VocodeJob*> r = {&f};
  EXPECT_THAT(sim.Run(r, 10), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("job 0: voice was not prepared by this runner")));
  EXPECT_TRUE(clock.sleeps.empty());  // rejected before any simulated work
  // Stage order is enforced too.
  VocodeJob s = Job(*voice, 10, 0, true);
  std::vector<VocodeJob*> t = {&s};
  auto batch = sim.NewFlowBatch();
  auto ids = sim.Admit(*batch, t, {2});
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(sim.Retire(*batch, *ids, t),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not finished its ODE")));
}

}  // namespace
}  // namespace vocoder::model

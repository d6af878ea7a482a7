// Streaming sessions: exact lengths for any chunking (with a shape-only fake
// job runner), and streaming fidelity against one-piece vocoding with the
// real tiny models (standard and turbo).
#include "server/stream_session.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "tests/testing/test_model.h"

namespace vocoder::server {
namespace {

using vocoder::testing::TestModelDir;
using vocoder::testing::TestTurboModelDir;

std::vector<int64_t> Utterance(int n) {
  std::vector<int64_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 389 + 17) % 6561);
  return t;
}

// Fills outputs with the shapes the real runner produces (values: the
// absolute sample position, so ordering mistakes show).
void FakeRun(model::VocodeJob& job) {
  const int64_t n = static_cast<int64_t>(job.tokens.size());
  const int64_t frames = 2 * n - (job.finalize ? 0 : 6) - 2 * job.context_tokens;
  const int64_t k = static_cast<int64_t>(job.mel_cache.size() / 80);
  job.mel.assign(static_cast<size_t>(frames * 80), 1.0f);
  job.audio.resize(static_cast<size_t>((k + frames) * 480));
  job.source.assign(job.audio.size(), 0.0f);
  const int64_t first = 480 * (job.noise_offset + 2 * job.context_tokens - k);
  for (size_t i = 0; i < job.audio.size(); ++i) job.audio[i] = float(first + int64_t(i));
}

template <typename Run>
std::vector<float> Stream(StreamSession& s, const std::vector<int64_t>& tokens, int chunk, Run run,
                          std::vector<size_t>* boundaries = nullptr) {
  std::vector<float> audio;
  auto drain = [&] {
    while (auto job = s.NextJob()) {
      run(*job);
      auto out = s.Complete(*job);
      audio.insert(audio.end(), out.begin(), out.end());
      if (boundaries != nullptr) boundaries->push_back(audio.size());
    }
  };
  for (size_t i = 0; i < tokens.size(); i += static_cast<size_t>(chunk)) {
    const size_t end = std::min(tokens.size(), i + static_cast<size_t>(chunk));
    s.Append({tokens.begin() + static_cast<std::ptrdiff_t>(i),
              tokens.begin() + static_cast<std::ptrdiff_t>(end)});
    drain();
  }
  s.EndInput();
  drain();
  auto tail = s.Flush();
  audio.insert(audio.end(), tail.begin(), tail.end());
  return audio;
}

class SessionShapeTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(SessionShapeTest, EmitsExactlyOneTokensWorthOfAudioPerToken) {
  const auto [tokens, chunk] = GetParam();
  StreamSession s(SessionOptions{}, nullptr, {});
  const auto audio = Stream(s, Utterance(tokens), chunk, FakeRun);
  EXPECT_TRUE(s.finished());
  ASSERT_EQ(audio.size(), static_cast<size_t>(tokens) * 960);
  // Gap-free and in order: sample i (after the trim fade) carries position i.
  for (size_t i = 960; i < audio.size(); ++i) {
    ASSERT_NEAR(audio[i], float(i), 1e-3f * float(i)) << "sample " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Chunkings, SessionShapeTest,
                         ::testing::Combine(::testing::Values(1, 3, 7, 40, 123),
                                            ::testing::Values(1, 2, 5, 25, 200)));

TEST(StreamSessionTest, EmptyUtteranceFinishesWithoutAudio) {
  StreamSession s(SessionOptions{}, nullptr, {});
  EXPECT_TRUE(Stream(s, {}, 10, FakeRun).empty());
  EXPECT_TRUE(s.finished());
}

TEST(StreamSessionTest, ContextStaysBoundedSoCostPerChunkDoesNotGrow) {
  StreamSession s(SessionOptions{}, nullptr, {});
  size_t longest = 0;
  Stream(s, Utterance(2000), 25, [&](model::VocodeJob& job) {
    longest = std::max(longest, job.tokens.size());
    EXPECT_LE(job.context_tokens, 25);
    FakeRun(job);
  });
  EXPECT_LE(longest, 25u + 25u + 3u);
}

TEST(StreamSessionTest, BacklogIsVocodedInBoundedJobs) {
  StreamSession s(SessionOptions{}, nullptr, {});
  size_t jobs = 0, longest = 0;
  const auto audio = Stream(s, Utterance(500), 500, [&](model::VocodeJob& job) {
    ++jobs;
    longest = std::max(longest, job.tokens.size());
    FakeRun(job);
  });
  EXPECT_EQ(audio.size(), 500u * 960);
  EXPECT_LE(longest, 25u + 50u + 3u);
  EXPECT_GE(jobs, 10u);
}

// Streaming fidelity with the real model: the concatenated stream against the
// same utterance vocoded in one piece, at the model's default steps, on the
// standard and on the turbo export. docs/streaming.md justifies the bounds.
class StreamFidelityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamFidelityTest, StreamedAudioMatchesOnePieceVocoding) {
  const bool turbo = GetParam() == model::kVariantTurbo;
  auto v = model::LoadVocoder(turbo ? TestTurboModelDir() : TestModelDir(), "cpu");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ((*v)->manifest().variant, GetParam());
  const int steps = (*v)->manifest().n_timesteps;
  // Measured 29.4-31.3 dB standard, 48.4-50.6 dB turbo; each bound about
  // 10 dB under its model's figures (docs/streaming.md).
  const double min_snr_db = turbo ? 38.0 : 20.0;
  auto data = model::ReadVoiceFile((*v)->manifest().Path((*v)->manifest().voices[0]));
  ASSERT_TRUE(data.ok());
  auto voice = (*v)->PrepareVoice(*data);
  ASSERT_TRUE(voice.ok());
  const std::array<float, 9> phase = {0, 0.3f, -1.1f, 2.0f, 0.7f, -2.5f, 1.4f, -0.2f, 3.0f};
  const auto tokens = Utterance(150);
  auto run = [&](model::VocodeJob& job) {
    model::VocodeJob* p = &job;
    ASSERT_TRUE((*v)->Run(absl::MakeConstSpan(&p, 1), steps).ok());
  };
  // One piece: every token in one row, silence as the final lookahead.
  SessionOptions one_piece;
  one_piece.max_new_tokens = 1 << 20;
  StreamSession whole(one_piece, *voice, phase);
  const auto reference = Stream(whole, tokens, 1000, run);
  ASSERT_EQ(reference.size(), tokens.size() * 960);

  for (int chunk : {20, 25, 40}) {
    StreamSession s(SessionOptions{}, *voice, phase);
    std::vector<size_t> boundaries;
    const auto streamed = Stream(s, tokens, chunk, run, &boundaries);
    ASSERT_EQ(streamed.size(), reference.size());
    double signal = 0, noise = 0;
    for (size_t i = 0; i < reference.size(); ++i) {
      signal += double(reference[i]) * reference[i];
      noise += (double(streamed[i]) - reference[i]) * (double(streamed[i]) - reference[i]);
    }
    const double snr_db = 10 * std::log10(signal / std::max(noise, 1e-30));
    // Largest sample-to-sample step at a chunk boundary vs anywhere else.
    double boundary_jump = 0, typical_jump = 0;
    for (size_t i = 1; i < streamed.size(); ++i) {
      typical_jump = std::max(typical_jump, double(std::abs(reference[i] - reference[i - 1])));
    }
    for (size_t b : boundaries) {
      if (b > 0 && b < streamed.size()) {
        boundary_jump = std::max(boundary_jump, double(std::abs(streamed[b] - streamed[b - 1])));
      }
    }
    std::printf(
        "%s, %d steps, chunk %d: SNR %.1f dB, max boundary jump %.4f, max jump in one-piece "
        "audio %.4f\n",
        GetParam().c_str(), steps, chunk, snr_db, boundary_jump, typical_jump);
    EXPECT_GT(snr_db, min_snr_db) << "chunk " << chunk;
    EXPECT_LE(boundary_jump, typical_jump) << "chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, StreamFidelityTest,
                         ::testing::Values(model::kVariantStandard, model::kVariantTurbo),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace vocoder::server

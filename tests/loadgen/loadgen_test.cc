// The load generator's arithmetic: the simulated player, the stability rule,
// the level summary, the /metrics parser and its differences, the report's
// field names. No server here; tests/loadgen/loadgen_e2e_test.py drives a
// real one.
#include "tools/loadgen/loadgen.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tools/loadgen/metrics_scrape.h"
#include "tools/loadgen/playback.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/stats.h"

namespace vocoder::loadgen {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(PlaybackTest, NoStallWhileAudioArrivesBeforeItIsNeeded) {
  Playback p(1000, 0);                 // 1000 samples = 1 s
  EXPECT_EQ(p.Arrive(10.0, 1000), 0);  // plays 10..11
  EXPECT_EQ(p.Arrive(10.5, 1000), 0);  // buffered: plays 11..12
  EXPECT_EQ(p.Arrive(12.0, 500), 0);   // exactly on time
  EXPECT_EQ(p.stall_s(), 0);
}

TEST(PlaybackTest, LateAudioStallsByItsLateness) {
  Playback p(1000, 0);
  p.Arrive(0.0, 1000);                           // runs out at 1.0
  EXPECT_DOUBLE_EQ(p.Arrive(1.25, 1000), 0.25);  // plays 1.25..2.25
  EXPECT_DOUBLE_EQ(p.Arrive(2.5, 1000), 0.25);
  EXPECT_DOUBLE_EQ(p.stall_s(), 0.5);
}

TEST(PlaybackTest, StartBufferAbsorbsJitterAndEmptyChunksAreIgnored) {
  Playback p(1000, 0.3);
  p.Arrive(0.0, 1000);  // starts at 0.3, runs out at 1.3
  EXPECT_EQ(p.Arrive(1.1, 0), 0);
  EXPECT_EQ(p.Arrive(1.2, 1000), 0);
  EXPECT_NEAR(p.Arrive(2.5, 1000), 0.2, 1e-12);  // ran out at 2.3
}

TEST(ServerStallTest, ConstantLatencyCausesNoServerStall) {
  // Paced at real time, 1 s chunks; the first carries only 0.72 s (the model
  // holds the rest back), so a player stalls 0.28 s whatever the server does.
  ServerStall s(1000, 0);
  Playback p(1000, 0);
  const double latency = 0.3;
  s.Arrive(1.0, 1.0 + latency, 720);
  p.Arrive(1.0 + latency, 720);
  for (int k = 1; k < 5; ++k) {
    EXPECT_EQ(s.Arrive(1.0 + k, 1.0 + k + latency, 1000), 0);
    p.Arrive(1.0 + k + latency, 1000);
  }
  EXPECT_EQ(s.stall_s(), 0);
  EXPECT_NEAR(p.stall_s(), 0.28, 1e-9);  // the player did pause: not the server's doing
}

TEST(ServerStallTest, JitterBeyondTheBufferIsTheServers) {
  ServerStall s(1000, 0.1);
  s.Arrive(1.0, 1.1, 720);                             // latency 0.1
  EXPECT_EQ(s.Arrive(2.0, 2.18, 1000), 0);             // 0.08 later than the first: buffered
  EXPECT_NEAR(s.Arrive(3.0, 3.25, 1000), 0.05, 1e-9);  // 0.15 later: 0.05 beyond the buffer
  EXPECT_EQ(s.Arrive(4.0, 4.25, 1000), 0);             // the timeline moved with the stall
  EXPECT_NEAR(s.stall_s(), 0.05, 1e-9);
}

TEST(ServerStallTest, UnpacedInputLeavesEveryPauseToTheServer) {
  ServerStall s(1000, 0);
  s.Arrive(0, 0.5, 1000);                          // plays 0.5..1.5
  EXPECT_NEAR(s.Arrive(0, 2.0, 1000), 0.5, 1e-9);  // all sent at 0: due at 1.5
}

WindowStats W(size_t chunks, double rate, double latency) {
  WindowStats w;
  w.chunks = chunks;
  w.audio_s_per_s = rate;
  w.mean_latency_ms = latency;
  return w;
}

TEST(StableTest, NeedsKWindowsWithinTolerance) {
  EXPECT_FALSE(Stable({W(5, 10, 100), W(5, 10, 100)}, 3, 10));
  EXPECT_TRUE(Stable({W(5, 1, 900), W(5, 10, 100), W(5, 10.5, 104), W(5, 9.6, 98)}, 3, 10));
  // Throughput agrees, latency does not.
  EXPECT_FALSE(Stable({W(5, 10, 100), W(5, 10, 150), W(5, 10, 100)}, 3, 10));
  // A window with no chunk is not a measurement.
  EXPECT_FALSE(Stable({W(0, 0, 0), W(0, 0, 0), W(0, 0, 0)}, 3, 10));
}

TEST(SummarizeTest, CountsOnlyEventsInsideTheRange) {
  std::vector<ChunkEvent> chunks;
  for (int i = 0; i < 10; ++i) {
    ChunkEvent c;
    c.t = i;  // 0..9
    c.latency_s = 0.1 * (i + 1);
    c.audio_s = 1;
    c.ttfa_s = i == 3 ? 0.4 : -1;
    c.queue_us = 1000;
    c.compute_us = 50000;
    c.batch_size = i < 5 ? 2 : 4;
    chunks.push_back(c);
  }
  std::vector<UtteranceEvent> utts = {
      {.t = 1, .code = "OK", .audio_s = 4, .total_s = 5, .stall_s = 0.2, .server_stall_s = 0.05},
      {.t = 4, .code = "OK", .audio_s = 2, .total_s = 2, .stall_s = 0, .server_stall_s = 0},
      {.t = 5, .code = "NOT_FOUND"},
      {.t = 6, .code = "NOT_FOUND"},
      {.t = 9.5, .code = "INTERNAL"},  // outside [2, 8)
  };
  const LevelSummary s = Summarize(chunks, utts, 2, 8, 0.01);
  EXPECT_EQ(s.chunk_latency_ms.n, 6u);  // t = 2..7
  EXPECT_DOUBLE_EQ(s.audio_s_per_s, 1.0);
  EXPECT_DOUBLE_EQ(s.chunks_per_s, 1.0);
  EXPECT_EQ(s.ttfa_ms.n, 1u);
  EXPECT_NEAR(s.ttfa_ms.p50, 400, 1e-9);
  EXPECT_NEAR(s.ttfa_overhead_ms.p50, 400 - 50, 1e-9);  // minus that chunk's compute
  EXPECT_NEAR(s.overhead_ms.p50, s.chunk_latency_ms.p50 - 51, 1e-9);
  EXPECT_EQ(s.utterances, 1u);  // the one at t = 4
  EXPECT_EQ(s.errors, 2u);
  EXPECT_THAT(s.errors_by_code, ElementsAre(Pair("NOT_FOUND", 2u)));
  EXPECT_THAT(s.chunks_by_batch_size, ElementsAre(Pair(2u, 3u), Pair(4u, 3u)));
  EXPECT_DOUBLE_EQ(s.mean_batch_size, 3.0);
  EXPECT_EQ(s.stalled_utterances, 0u);
  EXPECT_DOUBLE_EQ(s.rtf.p50, 1.0);
}

TEST(SummarizeTest, ServerStallAboveThresholdMarksAnUtteranceStalled) {
  std::vector<UtteranceEvent> utts = {
      {.t = 1, .code = "OK", .audio_s = 10, .total_s = 10, .stall_s = 0.5, .server_stall_s = 0.02},
      {.t = 1, .code = "OK", .audio_s = 10, .total_s = 10, .stall_s = 0.3, .server_stall_s = 0.005},
  };
  const LevelSummary s = Summarize({}, utts, 0, 2, 0.01);
  EXPECT_EQ(s.stalled_utterances, 1u);
  EXPECT_DOUBLE_EQ(s.stall_per_audio_s, 0.04);
  EXPECT_DOUBLE_EQ(s.server_stall_ms.max, 20);
}

constexpr char kBefore[] = R"(# HELP vocoder_batches_total Batches run.
# TYPE vocoder_batches_total counter
vocoder_batches_total{model="s3gen",trigger="full"} 2
vocoder_batches_total{model="s3gen",trigger="idle"} 5
vocoder_batch_items_total{model="s3gen"} 40
vocoder_batch_size_bucket{model="s3gen",le="1"} 3
vocoder_batch_size_bucket{model="s3gen",le="2"} 3
vocoder_batch_size_bucket{model="s3gen",le="4"} 3
vocoder_batch_size_bucket{model="s3gen",le="8"} 3
vocoder_batch_size_bucket{model="s3gen",le="+Inf"} 7
vocoder_queue_wait_seconds_sum 0.5
vocoder_queue_wait_seconds_count 40
vocoder_queue_wait_seconds_bucket{le="0.001"} 40
vocoder_queue_wait_seconds_bucket{le="0.01"} 40
vocoder_queue_wait_seconds_bucket{le="+Inf"} 40
vocoder_gpu_busy_seconds_total 10
vocoder_batch_frames_total 1000
vocoder_padding_frames_total 100
vocoder_rejections_total{reason="queue_full"} 1
)";

constexpr char kAfter[] = R"(vocoder_batches_total{model="s3gen",trigger="full"} 6
vocoder_batches_total{model="s3gen",trigger="idle"} 5
vocoder_batches_total{model="s3gen",trigger="max_wait"} 2
vocoder_batch_items_total{model="s3gen"} 100
vocoder_batch_size_bucket{model="s3gen",le="1"} 3
vocoder_batch_size_bucket{model="s3gen",le="2"} 5
vocoder_batch_size_bucket{model="s3gen",le="4"} 6
vocoder_batch_size_bucket{model="s3gen",le="8"} 7
vocoder_batch_size_bucket{model="s3gen",le="+Inf"} 13
vocoder_queue_wait_seconds_sum 1.1
vocoder_queue_wait_seconds_count 100
vocoder_queue_wait_seconds_bucket{le="0.001"} 60
vocoder_queue_wait_seconds_bucket{le="0.01"} 100
vocoder_queue_wait_seconds_bucket{le="+Inf"} 100
vocoder_gpu_busy_seconds_total 14
vocoder_batch_frames_total 2000
vocoder_padding_frames_total 300
vocoder_rejections_total{reason="queue_full"} 1
)";

TEST(MetricsScrapeTest, ParsesLabelsEscapesAndSpecialValues) {
  auto s = ParseMetrics("# c\n\nm{a=\"x\\\"y\",b=\"2\"} 3.5 1700000000\nn +Inf\nk{} NaN\n");
  ASSERT_TRUE(s.status().ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].name, "m");
  EXPECT_EQ((*s)[0].labels.at("a"), "x\"y");
  EXPECT_EQ((*s)[0].value, 3.5);
  EXPECT_TRUE(std::isinf((*s)[1].value));
  EXPECT_TRUE((*s)[2].labels.empty());
}

TEST(MetricsScrapeTest, RejectsMalformedLinesByNumber) {
  EXPECT_THAT(ParseMetrics("ok 1\nbroken{a=\"x\" 1\n").status().message(), HasSubstr("line 2"));
  EXPECT_THAT(ParseMetrics("m abc\n").status().message(), HasSubstr("bad value"));
}

TEST(MetricsScrapeTest, DiffReportsWhatTheServerDidBetweenSnapshots) {
  auto before = ParseMetrics(kBefore);
  auto after = ParseMetrics(kAfter);
  ASSERT_TRUE(before.status().ok()) << before.status();
  ASSERT_TRUE(after.status().ok()) << after.status();
  const ServerDelta d = Diff(*before, *after, 2.0);
  EXPECT_EQ(d.batches, 6);
  EXPECT_EQ(d.items, 60);
  EXPECT_EQ(d.mean_batch_size(), 10);
  EXPECT_THAT(d.triggers, ElementsAre(Pair("full", 4), Pair("max_wait", 2)));
  // Per-bucket counts: 2 of size 2, 1 of 3-4, 1 of 5-8, 2 above 8.
  EXPECT_THAT(d.batch_sizes,
              ElementsAre(Pair("2", 2), Pair("3-4", 1), Pair("5-8", 1), Pair(">8", 2)));
  EXPECT_TRUE(d.rejections.empty());
  EXPECT_DOUBLE_EQ(d.queue_wait_mean_ms, 10);
  // 60 new waits: 20 under 1 ms, 40 in (1, 10] ms; p95 rank 57 -> 1 + 9 * 37/40.
  EXPECT_THAT(d.queue_wait_p95_ms, DoubleNear(1 + 9 * 37.0 / 40, 1e-9));
  EXPECT_DOUBLE_EQ(d.gpu_busy_share, 2);
  EXPECT_DOUBLE_EQ(d.padding_waste, 0.2);
}

TEST(MetricsScrapeTest, HistogramQuantileMatchesPrometheus) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(HistogramQuantile({}, 0.5), 0);
  EXPECT_DOUBLE_EQ(HistogramQuantile({{1, 10}, {2, 20}, {inf, 20}}, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(HistogramQuantile({{1, 10}, {2, 20}, {inf, 20}}, 0.75), 1.5);
  EXPECT_DOUBLE_EQ(HistogramQuantile({{1, 10}, {2, 10}, {inf, 20}}, 0.9), 2.0);
}

TEST(MetricsScrapeTest, HttpGetExplainsBadUrls) {
  EXPECT_THAT(HttpGet("https://x:1/metrics").status().message(), HasSubstr("http://"));
  EXPECT_THAT(HttpGet("http://localhost/metrics").status().message(), HasSubstr("host:port"));
}

TEST(LoadOptionsTest, ValidateNamesTheBadField) {
  LoadOptions o;
  EXPECT_TRUE(o.Validate().ok()) << o.Validate();
  o.concurrency = {1, 0};
  EXPECT_THAT(o.Validate().message(), HasSubstr("concurrency must be positive; was 0"));
  o = LoadOptions{};
  o.max_windows = 2;
  EXPECT_THAT(o.Validate().message(), HasSubstr("max windows (2) must be >= stable windows (3)"));
  o = LoadOptions{};
  o.duration_s = 5;
  o.utterances = 3;
  EXPECT_THAT(o.Validate().message(), HasSubstr("not both"));
  o = LoadOptions{};
  o.metrics_url = "localhost:9464";
  EXPECT_THAT(o.Validate().message(), HasSubstr("http://"));
}

TEST(ReportTest, LevelJsonCarriesTheDocumentedFields) {
  LevelResult r;
  r.level.concurrency = 8;
  r.stable = true;
  r.summary.ttfa_ms.p50 = 12.5;
  r.server = ServerDelta{};
  r.server->batches = 4;
  r.server->items = 10;
  const auto j = LevelJson(r);
  for (const char* key :
       {"mode", "concurrency", "stable", "ttfa_ms", "chunk_latency_ms", "stall_ms",
        "server_stall_ms", "stalled_utterances", "rtf", "audio_s_per_s", "errors_by_code",
        "chunks_by_batch_size", "server", "windows", "overhead_ms"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["mode"], "closed");
  EXPECT_EQ(j["ttfa_ms"]["p50"], 12.5);
  EXPECT_EQ(j["server"]["mean_batch_size"], 2.5);
  // Header and row have the same number of columns.
  const auto count = [](const std::string& s) { return std::count(s.begin(), s.end(), ','); };
  EXPECT_EQ(count(CsvHeader()), count(CsvRow(r)));
}

}  // namespace
}  // namespace vocoder::loadgen

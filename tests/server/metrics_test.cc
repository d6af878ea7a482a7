// Metrics: observer events become the documented series, read back from a
// Collect() snapshot of the registry.
#include "server/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vocoder::server {
namespace {

const prometheus::MetricFamily* Find(const std::vector<prometheus::MetricFamily>& all,
                                     const std::string& name) {
  for (const auto& f : all) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const prometheus::ClientMetric* WithLabel(const prometheus::MetricFamily& f, const std::string& key,
                                          const std::string& value) {
  for (const auto& m : f.metric) {
    for (const auto& l : m.label) {
      if (l.name == key && l.value == value) return &m;
    }
  }
  return nullptr;
}

TEST(MetricsTest, BatchesTriggersPaddingAndOutcomesAreRecorded) {
  prometheus::Registry registry;
  Metrics m(registry, MetricsInfo{"0.1.0", "s3gen-tiny", 8, 5, "cpu"});
  batcher::BatchRecord b;
  b.trigger = batcher::Trigger::kNearFull;
  b.size = 6;
  b.max_batch_size = 8;
  b.padded_tokens = 600;
  b.real_tokens = 540;
  b.compute = std::chrono::milliseconds(20);
  m.OnBatch(b);
  m.OnDrain(2, 2);
  m.OnJobDone(batcher::JobOutcome::kOk, std::chrono::milliseconds(3));
  m.OnJobDone(batcher::JobOutcome::kExpired, std::chrono::milliseconds(40));
  m.OnReject(batcher::RejectReason::kQueueFull);
  m.Request("StreamVocode", absl::OkStatus());
  m.Request("StreamVocode", absl::NotFoundError("x"));
  m.AudioDelivered(1.5);
  m.OnOutOfMemorySplit(8);
  m.AudioUndelivered(0.25);
  m.Reject(Rejection::kIdle);

  const auto all = registry.Collect();
  const auto* batches = Find(all, "vocoder_batches_total");
  ASSERT_NE(batches, nullptr);
  ASSERT_NE(WithLabel(*batches, "trigger", "near_full"), nullptr);
  EXPECT_EQ(WithLabel(*batches, "trigger", "near_full")->counter.value, 1);
  EXPECT_EQ(WithLabel(*batches, "trigger", "max_wait")->counter.value, 0);
  const auto* size = Find(all, "vocoder_batch_size");
  ASSERT_NE(size, nullptr);
  const auto& buckets = size->metric[0].histogram.bucket;
  // Buckets 1, 2, 4, 8, +Inf: 6 lands in "le 8".
  ASSERT_EQ(buckets.size(), 5u);
  EXPECT_EQ(buckets[2].cumulative_count, 0u);
  EXPECT_EQ(buckets[3].cumulative_count, 1u);
  EXPECT_EQ(Find(all, "vocoder_padding_frames_total")->metric[0].counter.value, 120);
  EXPECT_EQ(Find(all, "vocoder_batch_frames_total")->metric[0].counter.value, 1200);
  EXPECT_DOUBLE_EQ(Find(all, "vocoder_batch_fill_ratio")->metric[0].histogram.sample_sum, 0.75);
  const auto* chunks = Find(all, "vocoder_chunks_total");
  EXPECT_EQ(WithLabel(*chunks, "outcome", "expired")->counter.value, 1);
  const auto* rejections = Find(all, "vocoder_rejections_total");
  // Deadline rejections are counted per call by the service, not per expired
  // job (one call's several queued jobs would count several times).
  EXPECT_EQ(WithLabel(*rejections, "reason", "deadline")->counter.value, 0);
  EXPECT_EQ(WithLabel(*rejections, "reason", "idle")->counter.value, 1);
  ASSERT_NE(WithLabel(*rejections, "reason", "peer_cap"), nullptr);
  EXPECT_EQ(WithLabel(*rejections, "reason", "queue_full")->counter.value, 1);
  const auto* requests = Find(all, "vocoder_requests_total");
  EXPECT_EQ(WithLabel(*requests, "code", "NOT_FOUND")->counter.value, 1);
  EXPECT_EQ(WithLabel(*requests, "code", "OK")->counter.value, 1);
  EXPECT_EQ(Find(all, "vocoder_audio_seconds_total")->metric[0].counter.value, 1.5);
  EXPECT_EQ(Find(all, "vocoder_oom_splits_total")->metric[0].counter.value, 1);
  EXPECT_EQ(Find(all, "vocoder_audio_undelivered_seconds_total")->metric[0].counter.value, 0.25);
  const auto* info = Find(all, "vocoder_build_info");
  ASSERT_NE(WithLabel(*info, "max_batch_size", "8"), nullptr);
  ASSERT_NE(WithLabel(*info, "device", "cpu"), nullptr);
  ASSERT_NE(WithLabel(*info, "variant", "standard"), nullptr);
  ASSERT_NE(WithLabel(*info, "n_timesteps", "10"), nullptr);
}

TEST(MetricsTest, BuildInfoSaysWhichVariantIsServed) {
  prometheus::Registry registry;
  Metrics m(registry, MetricsInfo{"0.1.0", "s3gen-tiny", 8, 5, "cpu", "step", "turbo", 2});
  const auto all = registry.Collect();
  const auto* info = Find(all, "vocoder_build_info");
  ASSERT_EQ(info->metric.size(), 1u);
  ASSERT_NE(WithLabel(*info, "variant", "turbo"), nullptr);
  ASSERT_NE(WithLabel(*info, "n_timesteps", "2"), nullptr);
  EXPECT_EQ(info->metric[0].gauge.value, 1);
}

TEST(MetricsTest, VoicesAreCountedPerBatchAndPerStep) {
  prometheus::Registry registry;
  Metrics m(registry, MetricsInfo{"0.1.0", "s3gen-tiny", 8, 5, "cpu", "step"});
  batcher::BatchRecord b;
  b.size = 4;
  b.voices = 3;
  m.OnBatch(b);
  m.OnDrain(1, 1);  // mixed grouping: one group, whatever the voices
  batcher::StepRecord step;
  step.rows = 5;
  step.voices = 2;
  m.OnStep(step);
  m.OnStepDecision(batcher::StepReason::kJoin, 6);
  m.OnStepDecision(batcher::StepReason::kCap, 6);
  m.OnStepDecision(batcher::StepReason::kCap, 5);

  const auto all = registry.Collect();
  const auto& voices = Find(all, "vocoder_batch_voice_groups")->metric[0].histogram;
  EXPECT_EQ(voices.sample_count, 2u);
  EXPECT_EQ(voices.sample_sum, 5);
  const auto* decisions = Find(all, "vocoder_step_decisions_total");
  ASSERT_NE(decisions, nullptr);
  EXPECT_EQ(WithLabel(*decisions, "reason", "cap")->counter.value, 2);
  EXPECT_EQ(WithLabel(*decisions, "reason", "join")->counter.value, 1);
  EXPECT_EQ(WithLabel(*decisions, "reason", "padding")->counter.value, 0);
  EXPECT_EQ(WithLabel(*decisions, "reason", "wait"), nullptr);
  EXPECT_EQ(Find(all, "vocoder_steps_total")->metric[0].counter.value, 1);
  EXPECT_EQ(Find(all, "vocoder_step_running_rows")->metric[0].histogram.sample_sum, 5);
  EXPECT_EQ(Find(all, "vocoder_step_row_cap")->metric[0].gauge.value, 5);
  ASSERT_NE(WithLabel(*Find(all, "vocoder_build_info"), "scheduling", "step"), nullptr);
}

TEST(MetricsTest, DeviceKindLabelsTheSimulator) {
  EXPECT_EQ(DeviceKind("cpu"), "cpu");
  EXPECT_EQ(DeviceKind("cuda:1"), "cuda");
  EXPECT_EQ(DeviceKind("sim"), "sim");
  EXPECT_EQ(DeviceKind("sim:h200-estimate"), "sim");
}

}  // namespace
}  // namespace vocoder::server

#include "tools/loadgen/report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace vocoder::loadgen {
namespace {

using nlohmann::json;

json PercentilesJson(const Percentiles& p) {
  return {{"n", p.n},     {"mean", p.mean}, {"p50", p.p50},
          {"p95", p.p95}, {"p99", p.p99},   {"max", p.max}};
}

template <typename Map>
json MapJson(const Map& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[absl::StrCat(k)] = v;
  return j;
}

std::string Name(const Level& l) {
  return l.arrival_rate > 0 ? absl::StrFormat("%.2f/s", l.arrival_rate)
                            : absl::StrCat(l.concurrency);
}

}  // namespace

json LevelJson(const LevelResult& r) {
  const LevelSummary& s = r.summary;
  json j = {
      {"mode", r.level.arrival_rate > 0 ? "open" : "closed"},
      {"concurrency", r.level.concurrency},
      {"arrival_rate", r.level.arrival_rate},
      {"stable", r.stable},
      {"windows", json::array()},
      {"measure_s", s.t1 - s.t0},
      {"utterances_started", r.started},
      {"utterances", s.utterances},
      {"dropped_arrivals", r.dropped_arrivals},
      {"errors", s.errors},
      {"errors_by_code", MapJson(s.errors_by_code)},
      {"ttfa_ms", PercentilesJson(s.ttfa_ms)},
      {"first_chunk_queue_ms", PercentilesJson(s.first_queue_ms)},
      {"first_chunk_compute_ms", PercentilesJson(s.first_compute_ms)},
      {"ttfa_overhead_ms", PercentilesJson(s.ttfa_overhead_ms)},
      {"chunk_latency_ms", PercentilesJson(s.chunk_latency_ms)},
      {"server_queue_ms", PercentilesJson(s.queue_ms)},
      {"server_compute_ms", PercentilesJson(s.compute_ms)},
      {"overhead_ms", PercentilesJson(s.overhead_ms)},
      {"rtf", PercentilesJson(s.rtf)},
      {"stall_ms", PercentilesJson(s.stall_ms)},
      {"server_stall_ms", PercentilesJson(s.server_stall_ms)},
      {"stalled_utterances", s.stalled_utterances},
      {"stall_per_audio_s", s.stall_per_audio_s},
      {"audio_s_per_s", s.audio_s_per_s},
      {"chunks_per_s", s.chunks_per_s},
      {"utterances_per_s", s.utterances_per_s},
      {"chunks_by_batch_size", MapJson(s.chunks_by_batch_size)},
      {"mean_batch_size", s.mean_batch_size},
  };
  for (const auto& w : r.windows) {
    j["windows"].push_back({{"t0", w.t0},
                            {"t1", w.t1},
                            {"chunks", w.chunks},
                            {"audio_s_per_s", w.audio_s_per_s},
                            {"mean_latency_ms", w.mean_latency_ms}});
  }
  if (r.server) {
    const ServerDelta& d = *r.server;
    j["server"] = {{"batches", d.batches},
                   {"items", d.items},
                   {"mean_batch_size", d.mean_batch_size()},
                   {"batch_sizes", MapJson(d.batch_sizes)},
                   {"triggers", MapJson(d.triggers)},
                   {"rejections", MapJson(d.rejections)},
                   {"queue_wait_mean_ms", d.queue_wait_mean_ms},
                   {"queue_wait_p95_ms", d.queue_wait_p95_ms},
                   {"compute_mean_ms", d.compute_mean_ms},
                   {"gpu_busy_share", d.gpu_busy_share},
                   {"padding_waste", d.padding_waste}};
  } else {
    j["server"] = nullptr;
    if (!r.server_error.empty()) j["server_error"] = r.server_error;
  }
  return j;
}

json OptionsJson(const LoadOptions& o, const std::vector<std::string>& voices) {
  return {{"target", o.target},
          {"metrics_url", o.metrics_url},
          {"voices", voices},
          {"connections", o.connections},
          {"utterance_tokens", o.utterance_tokens},
          {"chunk_tokens", o.chunk_tokens},
          {"tokens_per_second", o.tokens_per_second},
          {"n_timesteps", o.n_timesteps},
          {"encoding", o.pcm_f32 ? "pcm_f32le" : "pcm_s16le"},
          {"deadline_ms", o.deadline.count()},
          {"concurrency", o.concurrency},
          {"arrival_rates", o.arrival_rates},
          {"warmup_s", o.warmup_s},
          {"window_s", o.window_s},
          {"stable_windows", o.stable_windows},
          {"max_windows", o.max_windows},
          {"stability_pct", o.stability_pct},
          {"duration_s", o.duration_s},
          {"utterances", o.utterances},
          {"playback_buffer_ms", o.playback_buffer_ms},
          {"stall_threshold_ms", o.stall_threshold_ms},
          {"seed", o.seed}};
}

std::string TableHeader() {
  return absl::StrFormat(
      "%8s %7s %9s | %7s %7s %7s | %7s %7s %7s | %7s %6s %5s | %6s %6s %6s %4s\n", "level", "utt",
      "audio/s", "ttfa50", "ttfa95", "ttfa99", "chk50", "chk95", "chk99", "stall", "stall%", "rtf",
      "batch", "srvB", "err", "ok?");
}

std::string TableRow(const LevelResult& r) {
  const LevelSummary& s = r.summary;
  const double stalled =
      s.utterances > 0 ? 100.0 * static_cast<double>(s.stalled_utterances) / s.utterances : 0;
  return absl::StrFormat(
      "%8s %7d %9.2f | %7.1f %7.1f %7.1f | %7.1f %7.1f %7.1f | %7.1f %6.1f %5.2f | %6.2f %6.2f "
      "%6d %4s\n",
      Name(r.level), s.utterances, s.audio_s_per_s, s.ttfa_ms.p50, s.ttfa_ms.p95, s.ttfa_ms.p99,
      s.chunk_latency_ms.p50, s.chunk_latency_ms.p95, s.chunk_latency_ms.p99,
      s.server_stall_ms.mean, stalled, s.rtf.p50, s.mean_batch_size,
      r.server ? r.server->mean_batch_size() : 0.0, s.errors, r.stable ? "yes" : "no");
}

namespace {
const char* const kCsvColumns[] = {"mode",
                                   "concurrency",
                                   "arrival_rate",
                                   "stable",
                                   "measure_s",
                                   "utterances",
                                   "errors",
                                   "audio_s_per_s",
                                   "chunks_per_s",
                                   "ttfa_p50_ms",
                                   "ttfa_p95_ms",
                                   "ttfa_p99_ms",
                                   "chunk_p50_ms",
                                   "chunk_p95_ms",
                                   "chunk_p99_ms",
                                   "queue_p50_ms",
                                   "compute_p50_ms",
                                   "overhead_p50_ms",
                                   "rtf_p50",
                                   "stall_mean_ms",
                                   "server_stall_mean_ms",
                                   "stalled_utterances",
                                   "mean_batch_size",
                                   "server_mean_batch_size",
                                   "server_gpu_busy_share",
                                   "server_queue_wait_p95_ms"};
}  // namespace

std::string CsvHeader() { return absl::StrCat(absl::StrJoin(kCsvColumns, ","), "\n"); }

std::string CsvRow(const LevelResult& r) {
  const LevelSummary& s = r.summary;
  const ServerDelta d = r.server.value_or(ServerDelta{});
  std::vector<std::string> v = {r.level.arrival_rate > 0 ? "open" : "closed",
                                absl::StrCat(r.level.concurrency),
                                absl::StrCat(r.level.arrival_rate),
                                r.stable ? "1" : "0",
                                absl::StrFormat("%.3f", s.t1 - s.t0),
                                absl::StrCat(s.utterances),
                                absl::StrCat(s.errors),
                                absl::StrFormat("%.4f", s.audio_s_per_s),
                                absl::StrFormat("%.4f", s.chunks_per_s),
                                absl::StrFormat("%.3f", s.ttfa_ms.p50),
                                absl::StrFormat("%.3f", s.ttfa_ms.p95),
                                absl::StrFormat("%.3f", s.ttfa_ms.p99),
                                absl::StrFormat("%.3f", s.chunk_latency_ms.p50),
                                absl::StrFormat("%.3f", s.chunk_latency_ms.p95),
                                absl::StrFormat("%.3f", s.chunk_latency_ms.p99),
                                absl::StrFormat("%.3f", s.queue_ms.p50),
                                absl::StrFormat("%.3f", s.compute_ms.p50),
                                absl::StrFormat("%.3f", s.overhead_ms.p50),
                                absl::StrFormat("%.4f", s.rtf.p50),
                                absl::StrFormat("%.3f", s.stall_ms.mean),
                                absl::StrFormat("%.3f", s.server_stall_ms.mean),
                                absl::StrCat(s.stalled_utterances),
                                absl::StrFormat("%.3f", s.mean_batch_size),
                                absl::StrFormat("%.3f", d.mean_batch_size()),
                                absl::StrFormat("%.4f", d.gpu_busy_share),
                                absl::StrFormat("%.3f", d.queue_wait_p95_ms)};
  return absl::StrCat(absl::StrJoin(v, ","), "\n");
}

}  // namespace vocoder::loadgen

#include "tools/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tools/bench/quantile.h"

namespace vocoder::loadgen {

Percentiles Describe(std::vector<double> v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  p.p50 = bench::QuantileSorted(v, 0.50);
  p.p95 = bench::QuantileSorted(v, 0.95);
  p.p99 = bench::QuantileSorted(v, 0.99);
  p.max = v.back();
  return p;
}

WindowStats Window(const std::vector<ChunkEvent>& chunks, double t0, double t1) {
  WindowStats w;
  w.t0 = t0;
  w.t1 = t1;
  double audio = 0, latency = 0;
  for (const auto& c : chunks) {
    if (c.t < t0 || c.t >= t1) continue;
    ++w.chunks;
    audio += c.audio_s;
    latency += c.latency_s;
  }
  if (t1 > t0) w.audio_s_per_s = audio / (t1 - t0);
  if (w.chunks > 0) w.mean_latency_ms = 1e3 * latency / static_cast<double>(w.chunks);
  return w;
}

bool Stable(const std::vector<WindowStats>& windows, int k, double pct) {
  if (k <= 0 || windows.size() < static_cast<size_t>(k)) return false;
  const auto first = windows.end() - k;
  auto within = [&](auto get) {
    double sum = 0;
    for (auto it = first; it != windows.end(); ++it) sum += get(*it);
    const double mean = sum / k;
    for (auto it = first; it != windows.end(); ++it) {
      if (std::abs(get(*it) - mean) > mean * pct / 100) return false;
    }
    return true;
  };
  for (auto it = first; it != windows.end(); ++it) {
    if (it->chunks == 0) return false;
  }
  return within([](const WindowStats& w) { return w.audio_s_per_s; }) &&
         within([](const WindowStats& w) { return w.mean_latency_ms; });
}

LevelSummary Summarize(const std::vector<ChunkEvent>& chunks,
                       const std::vector<UtteranceEvent>& utterances, double t0, double t1,
                       double stall_threshold_s) {
  LevelSummary s;
  s.t0 = t0;
  s.t1 = t1;
  std::vector<double> ttfa, first_queue, first_compute, ttfa_overhead, latency, queue, compute,
      overhead, rtf, stall, server_stall;
  double audio = 0, batch_weighted = 0, utterance_audio = 0, stall_total = 0;
  size_t n_chunks = 0;
  for (const auto& c : chunks) {
    if (c.t < t0 || c.t >= t1) continue;
    ++n_chunks;
    audio += c.audio_s;
    latency.push_back(1e3 * c.latency_s);
    queue.push_back(c.queue_us / 1e3);
    compute.push_back(c.compute_us / 1e3);
    overhead.push_back(1e3 * c.latency_s - (c.queue_us + c.compute_us) / 1e3);
    if (c.ttfa_s >= 0) {
      ttfa.push_back(1e3 * c.ttfa_s);
      first_queue.push_back(c.queue_us / 1e3);
      first_compute.push_back(c.compute_us / 1e3);
      ttfa_overhead.push_back(1e3 * c.ttfa_s - c.compute_us / 1e3);
    }
    ++s.chunks_by_batch_size[c.batch_size];
    batch_weighted += c.batch_size;
  }
  for (const auto& u : utterances) {
    if (u.t < t0 || u.t >= t1) continue;
    if (u.code != "OK") {
      ++s.errors;
      ++s.errors_by_code[u.code];
      continue;
    }
    ++s.utterances;
    if (u.audio_s > 0) rtf.push_back(u.total_s / u.audio_s);
    stall.push_back(1e3 * u.stall_s);
    server_stall.push_back(1e3 * u.server_stall_s);
    if (u.server_stall_s > stall_threshold_s) ++s.stalled_utterances;
    utterance_audio += u.audio_s;
    stall_total += u.stall_s;
  }
  s.ttfa_ms = Describe(std::move(ttfa));
  s.first_queue_ms = Describe(std::move(first_queue));
  s.first_compute_ms = Describe(std::move(first_compute));
  s.ttfa_overhead_ms = Describe(std::move(ttfa_overhead));
  s.chunk_latency_ms = Describe(std::move(latency));
  s.queue_ms = Describe(std::move(queue));
  s.compute_ms = Describe(std::move(compute));
  s.overhead_ms = Describe(std::move(overhead));
  s.rtf = Describe(std::move(rtf));
  s.stall_ms = Describe(std::move(stall));
  s.server_stall_ms = Describe(std::move(server_stall));
  if (utterance_audio > 0) s.stall_per_audio_s = stall_total / utterance_audio;
  if (n_chunks > 0) s.mean_batch_size = batch_weighted / static_cast<double>(n_chunks);
  const double span = t1 - t0;
  if (span > 0) {
    s.audio_s_per_s = audio / span;
    s.chunks_per_s = static_cast<double>(n_chunks) / span;
    s.utterances_per_s = static_cast<double>(s.utterances) / span;
  }
  return s;
}

}  // namespace vocoder::loadgen

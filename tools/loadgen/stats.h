// What the load generator records during a level, and what it makes of it:
// per-window figures for the stability search (perf_analyzer's method:
// measure in windows until the last K agree within a tolerance) and the
// level's summary over the stable windows. Pure functions over events; no
// gRPC, no clock.
//
// Times are seconds since the level started.
#ifndef VOCODER_TOOLS_LOADGEN_STATS_H_
#define VOCODER_TOOLS_LOADGEN_STATS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vocoder::loadgen {

// One audio chunk as the client received it.
struct ChunkEvent {
  double t = 0;
  double latency_s = 0;  // its TokenChunk sent -> audio received
  double audio_s = 0;
  double ttfa_s = -1;                                     // set on an utterance's first audio
  uint32_t queue_us = 0, compute_us = 0, batch_size = 0;  // ServerTiming
};

// One utterance's end.
struct UtteranceEvent {
  double t = 0;
  std::string code = "OK";  // gRPC status code name
  double audio_s = 0;
  double total_s = 0;  // call start -> last audio
  double stall_s = 0;  // underruns a real-time player heard (Playback)
  // The part of them the server caused (ServerStall): pacing and the model's
  // lookahead cause pauses a zero-latency server would cause too.
  double server_stall_s = 0;
};

struct Percentiles {
  size_t n = 0;
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};
Percentiles Describe(std::vector<double> values);

struct WindowStats {
  double t0 = 0, t1 = 0;
  size_t chunks = 0;
  double audio_s_per_s = 0;
  double mean_latency_ms = 0;
};
WindowStats Window(const std::vector<ChunkEvent>& chunks, double t0, double t1);

// True when the last `k` windows' throughput and mean chunk latency each lie
// within `pct` percent of their mean (and at least one chunk arrived in each).
bool Stable(const std::vector<WindowStats>& windows, int k, double pct);

struct LevelSummary {
  double t0 = 0, t1 = 0;
  size_t utterances = 0;  // completed without error
  size_t errors = 0;
  std::map<std::string, size_t> errors_by_code;
  Percentiles ttfa_ms, chunk_latency_ms, queue_ms, compute_ms;
  Percentiles overhead_ms;  // chunk latency - queue - compute: transport, session, serialization
  Percentiles first_queue_ms, first_compute_ms;  // ServerTiming of first-audio chunks
  // Per utterance, time to first audio minus the server's compute time of
  // that very chunk: what the server adds to the model for a first chunk
  // (queueing, batching, session, transport), paired so that machine drift
  // between two separate measurements cannot leak in.
  Percentiles ttfa_overhead_ms;
  Percentiles rtf;                        // utterance wall time / its audio
  Percentiles stall_ms, server_stall_ms;  // per utterance
  size_t stalled_utterances = 0;          // server_stall above the threshold
  double stall_per_audio_s = 0;           // stall seconds per second of audio
  double audio_s_per_s = 0, chunks_per_s = 0, utterances_per_s = 0;
  std::map<uint32_t, size_t> chunks_by_batch_size;  // each chunk counted once, at its batch's size
  double mean_batch_size = 0;                       // chunk-weighted
};

// Events with t0 <= t < t1.
LevelSummary Summarize(const std::vector<ChunkEvent>& chunks,
                       const std::vector<UtteranceEvent>& utterances, double t0, double t1,
                       double stall_threshold_s);

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_STATS_H_

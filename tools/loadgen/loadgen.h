// vocoder-loadgen's engine: drives vocoderd with N concurrent streams (closed
// loop) or Poisson utterance arrivals (open loop), one level at a time, and
// measures each level perf_analyzer-style: a warm-up that is thrown away,
// then windows until the last few agree, then a summary of those windows
// plus what /metrics says the server did in them.
//
// Thread-safety: Run() is not reentrant; call it from one thread. It starts
// and joins its own stream threads.
#ifndef VOCODER_TOOLS_LOADGEN_LOADGEN_H_
#define VOCODER_TOOLS_LOADGEN_LOADGEN_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/client/vocoder_client.h"
#include "tools/loadgen/metrics_scrape.h"
#include "tools/loadgen/stats.h"

namespace vocoder::loadgen {

struct LoadOptions {
  std::string target = "127.0.0.1:50051";
  std::string metrics_url;          // http://host:port/metrics; empty = no server figures
  std::vector<std::string> voices;  // stream i uses voices[i % n]; empty = all the server lists
  int connections = 4;              // HTTP/2 connections the streams are spread over
  // Utterances.
  int utterance_tokens = 250;             // 10 s of speech
  int chunk_tokens = 25;                  // tokens per TokenChunk
  double tokens_per_second = 25;          // T3's pace; 0 = as fast as possible
  uint32_t n_timesteps = 0;               // 0 = server default
  bool pcm_f32 = false;                   // encoding; PCM s16 otherwise
  std::chrono::milliseconds deadline{0};  // per utterance; 0 = none
  uint64_t seed = 1;
  // Load.
  std::vector<int> concurrency = {1, 2, 4, 8, 16, 32, 64, 128};  // closed loop
  std::vector<double> arrival_rates;  // utterances/s; non-empty = open loop instead
  int max_inflight = 1024;            // open loop: arrivals beyond this are dropped (counted)
  // Measurement.
  double warmup_s = 5;
  double window_s = 10;
  int stable_windows = 3;
  int max_windows = 10;
  double stability_pct = 10;
  double duration_s = 0;  // > 0: one fixed window of this length instead of the search
  int utterances = 0;     // > 0: measure until this many utterances ended instead
  // The simulated player starts this long after the first audio arrives: a
  // client's jitter buffer. With none, every chunk that takes longer than the
  // first (which has no left context, so it is the cheapest) is an underrun.
  double playback_buffer_ms = 100;
  double stall_threshold_ms = 10;  // server-caused stall above this counts as a stalled utterance

  // Checks every field; InvalidArgument names the first bad one.
  absl::Status Validate() const;
};

// One level of a sweep: closed loop with `concurrency` streams, or open loop
// at `arrival_rate` utterances per second.
struct Level {
  int concurrency = 0;
  double arrival_rate = 0;
};

struct LevelResult {
  Level level;
  LevelSummary summary;
  std::vector<WindowStats> windows;   // every window measured
  bool stable = false;                // the stability search converged
  size_t started = 0;                 // utterances started during the whole level
  size_t dropped_arrivals = 0;        // open loop: arrivals over max_inflight
  std::optional<ServerDelta> server;  // over the summary's windows
  std::string server_error;           // why `server` is missing, when metrics_url is set
};

class LoadGenerator {
 public:
  // Connects and resolves the voices (ListVoices when none are given).
  // Unavailable when the server cannot be reached.
  static absl::StatusOr<std::unique_ptr<LoadGenerator>> Create(const LoadOptions& options);

  // Runs one level to the end (blocking): warm-up, measurement, then stops
  // its streams (cancelling those still open; they are not counted).
  LevelResult Run(const Level& level);

  const std::vector<std::string>& voices() const { return voices_; }

 private:
  explicit LoadGenerator(const LoadOptions& options) : options_(options) {}

  LoadOptions options_;
  std::vector<std::unique_ptr<client::VocoderClient>> clients_;  // one per connection
  std::vector<std::string> voices_;
  uint64_t next_utterance_ = 0;
};

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_LOADGEN_H_

// `vocoder-bench model`: the model runner's batch sweep, the measured version
// of the design note's table (batch 1 ~50 ms, 8 ~70 ms, 32 ~150 ms, 64 ~280 ms).
// Each run goes through the stages (Admit, Step x n, Retire), each timed, so
// the JSON also holds per-stage medians and shapes: the input of
// tools/bench/fit_profile.py, which turns it into a simulator profile.
#ifndef VOCODER_TOOLS_BENCH_MODEL_BENCH_H_
#define VOCODER_TOOLS_BENCH_MODEL_BENCH_H_

#include <string>
#include <vector>

namespace vocoder::bench {

struct ModelBenchOptions {
  std::string model_dir = "models/default";
  std::string device = "cpu";
  std::string json_path;
  std::vector<int> batch_sizes = {1, 2, 4, 8, 16, 32, 64};
  std::vector<int> chunk_tokens = {25, 50};  // new tokens per job
  int context_tokens = 25;                   // left context re-vocoded per chunk
  int prompt_tokens = 250;                   // 10 s voice prompt
  std::string voice_file;  // a voice of the export (voices/NAME.pt) instead of a synthetic one
  int n_timesteps = 0;     // 0: the model's default (its manifest: standard 10, turbo 2)
  int iterations = 5;
  int warmup = 1;
  // Idle time before each run: a paced stream's chunks arrive about a second
  // apart, and a model that was idle runs its next batch slower (sleeping
  // worker threads, cold caches) than one run back to back.
  int gap_ms = 0;
  // Mel/source cache frames per job (the server's sessions send 8 after the
  // first chunk): HiFT then vocodes cache + emitted frames, as in serving.
  int cache_frames = 0;
  // Job i of a batch gets i more new tokens than job 0, so no two rows share
  // a vocoded length and Retire runs HiFT once per row (it is not causal, so
  // rows of different lengths are vocoded apart): what that costs against a
  // batch of equal rows. Shapes in the JSON are then job 0's (row_tokens,
  // hift_frames) and the batch's padded ones (padded_tokens, padded_frames).
  bool distinct_lengths = false;
};

int RunModelBench(const ModelBenchOptions& options);

}  // namespace vocoder::bench

#endif  // VOCODER_TOOLS_BENCH_MODEL_BENCH_H_

// vocoder-bench: benchmarks that print numbers and write JSON.
//   vocoder-bench batcher --json FILE                                the batcher's overhead
//   vocoder-bench model --model-dir DIR --device cpu|cuda:0 --json FILE   the model batch sweep
#include <cstdio>

#include "CLI/CLI.hpp"
#include "tools/bench/batcher_bench.h"
#include "tools/bench/model_bench.h"

int main(int argc, char** argv) {
  CLI::App app{"vocoder-bench: vocoderd benchmarks (numbers on stdout, JSON on request)"};
  app.require_subcommand(1);

  vocoder::bench::BatcherBenchOptions b;
  auto* batcher = app.add_subcommand("batcher",
                                     "Batcher overhead: submit cost, lone-stream "
                                     "dispatch latency, queue throughput");
  batcher->add_option("--json", b.json_path, "Write results as JSON to this file");
  batcher->add_option("--compute-ms", b.compute_ms, "Batch time of the sleeping runner");
  batcher->add_flag("--quick", b.quick, "Few iterations (smoke test)");

  vocoder::bench::ModelBenchOptions m;
  auto* model = app.add_subcommand("model",
                                   "Model batch sweep: latency, amortized time per job, "
                                   "audio seconds per second, peak memory");
  model->add_option("--model-dir", m.model_dir, "Exported model directory")->capture_default_str();
  model->add_option("--device", m.device, "cpu, cuda:N, or sim[:PROFILE] (simulated)")
      ->capture_default_str();
  model->add_option("--json", m.json_path, "Write results as JSON to this file");
  model->add_option("--batch-sizes", m.batch_sizes, "Batch sizes to sweep")->capture_default_str();
  model->add_option("--chunk-tokens", m.chunk_tokens, "New tokens per job")->capture_default_str();
  model->add_option("--context-tokens", m.context_tokens, "Left context tokens per job")
      ->capture_default_str();
  model->add_option("--prompt-tokens", m.prompt_tokens, "Voice prompt tokens (250 = 10 s)")
      ->capture_default_str();
  model->add_option("--voice", m.voice_file,
                    "Use this voice file (MODEL/voices/NAME.pt) instead of a synthetic prompt");
  model
      ->add_option("--steps", m.n_timesteps,
                   "Euler steps; 0 = the model's default (standard 10, CFG doubles each; "
                   "turbo 2)")
      ->capture_default_str();
  model->add_option("--iterations", m.iterations, "Timed runs per point")->capture_default_str();
  model->add_option("--warmup", m.warmup, "Untimed runs per point")->capture_default_str();
  model
      ->add_option("--cache-frames", m.cache_frames,
                   "HiFT mel/source cache frames per job (the server's sessions use 8)")
      ->capture_default_str();
  model->add_flag("--distinct-lengths", m.distinct_lengths,
                  "Job i gets i more new tokens: every row a different HiFT length");
  model->add_option("--gap-ms", m.gap_ms, "Idle time before each run (a paced stream's chunk gap)")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  if (batcher->parsed()) return vocoder::bench::RunBatcherBench(b);
  if (model->parsed()) return vocoder::bench::RunModelBench(m);
  return 2;
}

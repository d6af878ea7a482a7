// `vocoder-bench batcher`: the batcher's own overhead, with a no-op runner and
// with a runner that sleeps a fixed compute time.
#ifndef VOCODER_TOOLS_BENCH_BATCHER_BENCH_H_
#define VOCODER_TOOLS_BENCH_BATCHER_BENCH_H_

#include <string>

namespace vocoder::bench {

struct BatcherBenchOptions {
  std::string json_path;  // "" = no JSON
  int lone_iterations = 2000;
  int jobs_per_level = 20000;
  double compute_ms = 2.0;  // the sleeping runner's batch time
  bool quick = false;       // fewer iterations (smoke test)
};

int RunBatcherBench(const BatcherBenchOptions& options);

}  // namespace vocoder::bench

#endif  // VOCODER_TOOLS_BENCH_BATCHER_BENCH_H_

// vocoder-bench: benchmarks that print numbers and write JSON.
//   vocoder-bench batcher --json FILE   the batcher's overhead and throughput
#include <cstdio>

#include "CLI/CLI.hpp"
#include "tools/bench/batcher_bench.h"

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
  CLI11_PARSE(app, argc, argv);
  if (batcher->parsed()) return vocoder::bench::RunBatcherBench(b);
  return 2;
}

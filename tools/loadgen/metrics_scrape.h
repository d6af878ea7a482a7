// Reads vocoderd's /metrics (Prometheus text format 0.0.4) so the load
// generator can report what the server did during a measurement: batch sizes,
// trigger reasons, queue wait, GPU-thread busy share. Two snapshots, one
// difference.
//
// Thread-compatible.
#ifndef VOCODER_TOOLS_LOADGEN_METRICS_SCRAPE_H_
#define VOCODER_TOOLS_LOADGEN_METRICS_SCRAPE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vocoder::loadgen {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text exposition format; comment and blank lines are skipped.
// InvalidArgument names the first line it cannot read.
absl::StatusOr<std::vector<Sample>> ParseMetrics(const std::string& text);

// GET of an http://host:port/path URL (HTTP/1.0, no TLS, 2 s timeouts);
// the body of a 200 answer.
absl::StatusOr<std::string> HttpGet(const std::string& url);

// Sum of the samples named `name` whose labels include every `match` pair.
double Sum(const std::vector<Sample>& s, const std::string& name,
           const std::map<std::string, std::string>& match = {});
// Sums of the samples named `name`, keyed by the value of label `label`.
std::map<std::string, double> SumBy(const std::vector<Sample>& s, const std::string& name,
                                    const std::string& label);

// The server's side of one measurement: `after` minus `before`.
struct ServerDelta {
  double batches = 0;
  double items = 0;                           // jobs run in those batches
  std::map<std::string, double> triggers;     // trigger -> batches
  std::map<std::string, double> batch_sizes;  // "1", "2", "3-4", "5-8", ... -> batches
  std::map<std::string, double> rejections;   // reason -> count
  double queue_wait_mean_ms = 0;
  double queue_wait_p95_ms = 0;  // interpolated from the histogram's buckets
  double compute_mean_ms = 0;
  double gpu_busy_share = 0;  // GPU-thread busy seconds per second
  double padding_waste = 0;   // padding frames / frames
  double mean_batch_size() const { return batches > 0 ? items / batches : 0; }
};

ServerDelta Diff(const std::vector<Sample>& before, const std::vector<Sample>& after,
                 double wall_s);

// histogram_quantile over cumulative (upper bound, count) pairs, +Inf last;
// linear within a bucket, as Prometheus does. 0 for an empty histogram.
double HistogramQuantile(const std::vector<std::pair<double, double>>& buckets, double q);

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_METRICS_SCRAPE_H_

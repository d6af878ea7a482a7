// Nearest-rank quantile shared by the benchmarks.
#ifndef VOCODER_TOOLS_BENCH_QUANTILE_H_
#define VOCODER_TOOLS_BENCH_QUANTILE_H_

#include <algorithm>
#include <vector>

namespace vocoder::bench {

// q in [0, 1] of an ascending sample; 0 for an empty one.
inline double QuantileSorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i =
      std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  return sorted[i];
}

// q in [0, 1] of any sample; 0 for an empty one.
inline double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return QuantileSorted(v, q);
}

}  // namespace vocoder::bench

#endif  // VOCODER_TOOLS_BENCH_QUANTILE_H_

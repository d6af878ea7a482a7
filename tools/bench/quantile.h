// Nearest-rank quantile shared by the benchmarks.
#ifndef VOCODER_TOOLS_BENCH_QUANTILE_H_
#define VOCODER_TOOLS_BENCH_QUANTILE_H_

#include <algorithm>
#include <vector>

namespace vocoder::bench {

// q in [0, 1]; 0 for an empty sample.
inline double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

}  // namespace vocoder::bench

#endif  // VOCODER_TOOLS_BENCH_QUANTILE_H_

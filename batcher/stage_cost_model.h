// Online model of the three stages of a step-scheduled solve (issue #13), so
// the step policy can weigh admission against the deadlines of running rows
// and pick the number of running rows that maximises throughput:
//
//   encoder(rows, longest) = a + b x            (x = rows * longest tokens)
//   step(rows, longest)    = a + b x + c x^2    (one Euler step, CFG rows if any)
//   hift(rows, longest)    = a + b x
//
// each fitted by exponentially weighted least squares over measured calls
// (the batcher times every Admit, Step and Retire). The step's quadratic term
// is what lets "bigger is not faster per row" show: with c > 0 the step time
// per row, a/R + b T + c R T^2 at padded length T, is smallest at
// R = sqrt(a / c) / T; with c = 0 (a device that one step does not saturate)
// it falls all the way to max_batch_size. A fit that comes out concave
// (c < 0) or with a negative term falls back to fewer terms (see .cc).
//
// Thread-compatible: used by the batcher's thread only.
#ifndef VOCODER_BATCHER_STAGE_COST_MODEL_H_
#define VOCODER_BATCHER_STAGE_COST_MODEL_H_

#include <cstdint>

#include "batcher/clock.h"
#include "batcher/cost_model.h"

namespace vocoder::batcher {

// y = a + b x + c x^2 with a, b, c >= 0, fitted online.
class QuadraticCostFit {
 public:
  // Prior a, b (seconds, seconds per unit of x); c starts at 0. `decay` in
  // (0, 1): weight kept by older observations per new one.
  QuadraticCostFit(double a, double b, double decay);
  double Predict(double x) const { return a_ + b_ * x + c_ * x * x; }
  void Observe(double x, double y);
  double a() const { return a_; }
  double b() const { return b_; }
  double c() const { return c_; }

 private:
  double decay_;
  double a_, b_, c_ = 0;
  double w_ = 0;
  double sx_[5] = {};  // weighted sums of x^0..x^4 (sx_[0] == w_)
  double sy_[3] = {};  // weighted sums of y x^0..y x^2
};

class StageCostModel {
 public:
  // Priors per call: `fixed` + `per_token` * (rows x longest), the same for
  // every stage until measured.
  StageCostModel(Duration fixed, Duration per_token);

  Duration Encoder(int rows, int64_t longest) const;
  Duration Step(int rows, int64_t longest) const;
  Duration Hift(int rows, int64_t longest) const;
  void ObserveEncoder(int rows, int64_t longest, Duration took);
  void ObserveStep(int rows, int64_t longest, Duration took);
  void ObserveHift(int rows, int64_t longest, Duration took);

  // The throughput cap: the largest row count in 1..max_rows whose predicted
  // step time per row at padded length `longest` is within kCapTolerance of
  // the smallest one. max_rows when per-row time never rises (c == 0).
  int BestRows(int64_t longest, int max_rows) const;
  static constexpr double kCapTolerance = 0.05;

  // The device time a separate join costs beyond the rows' own share: the
  // fixed parts of one more encoder call now and one more HiFT call when the
  // joiners retire (the intercepts of the two fits).
  Duration JoinOverhead() const;

  const QuadraticCostFit& step_fit() const { return step_; }

 private:
  CostModel encoder_;
  QuadraticCostFit step_;
  CostModel hift_;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_STAGE_COST_MODEL_H_

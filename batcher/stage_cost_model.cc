#include "batcher/stage_cost_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace vocoder::batcher {
namespace {

double Seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

Duration FromSeconds(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(std::max(0.0, s)));
}

double X(int rows, int64_t longest) {
  return static_cast<double>(rows) * static_cast<double>(std::max<int64_t>(longest, 0));
}

// Solves the n x n system m * out = r (n <= 3) by Gaussian elimination with
// partial pivoting; false when it is (nearly) singular.
bool Solve(int n, double m[3][3], double r[3], double out[3]) {
  for (int col = 0; col < n; ++col) {
    int pivot = col;
    for (int row = col + 1; row < n; ++row) {
      if (std::abs(m[row][col]) > std::abs(m[pivot][col])) pivot = row;
    }
    if (std::abs(m[pivot][col]) < 1e-10) return false;
    std::swap(m[pivot], m[col]);
    std::swap(r[pivot], r[col]);
    for (int row = col + 1; row < n; ++row) {
      const double f = m[row][col] / m[col][col];
      for (int k = col; k < n; ++k) m[row][k] -= f * m[col][k];
      r[row] -= f * r[col];
    }
  }
  for (int row = n - 1; row >= 0; --row) {
    double v = r[row];
    for (int k = row + 1; k < n; ++k) v -= m[row][k] * out[k];
    out[row] = v / m[row][row];
  }
  return true;
}

}  // namespace

QuadraticCostFit::QuadraticCostFit(double a, double b, double decay)
    : decay_(decay), a_(a), b_(b) {}

void QuadraticCostFit::Observe(double x, double y) {
  double xk = 1;
  for (double& s : sx_) {
    s = decay_ * s + xk;
    xk *= x;
  }
  xk = 1;
  for (double& s : sy_) {
    s = decay_ * s + y * xk;
    xk *= x;
  }
  w_ = sx_[0];
  // Work in u = x / scale so that the normal equations stay well conditioned.
  const double scale = std::max(1.0, sx_[1] / w_);
  double su[5];
  double ru[3];
  for (int k = 0; k < 5; ++k) su[k] = sx_[k] / std::pow(scale, k) / w_;
  for (int k = 0; k < 3; ++k) ru[k] = sy_[k] / std::pow(scale, k) / w_;

  // 1. The full quadratic, if it is convex with non-negative terms. 2. If it
  // is convex but wants a negative fixed or linear term, the quadratic through
  // the origin, y = b x + c x^2.
  double m[3][3] = {{su[0], su[1], su[2]}, {su[1], su[2], su[3]}, {su[2], su[3], su[4]}};
  double r[3] = {ru[0], ru[1], ru[2]};
  double p[3] = {};
  const bool solved = Solve(3, m, r, p);
  // Rounding leaves exact zeros slightly negative: a term that contributes
  // under a millionth of the mean time is zero.
  for (int k = 0; k < 3 && solved; ++k) {
    if (p[k] < 0 && std::abs(p[k] * std::pow(su[1], k)) <= 1e-6 * std::abs(ru[0])) p[k] = 0;
  }
  if (solved && p[2] > 0) {
    if (p[0] >= 0 && p[1] >= 0) {
      a_ = p[0];
      b_ = p[1] / scale;
      c_ = p[2] / (scale * scale);
      return;
    }
    double m2[3][3] = {{su[2], su[3], 0}, {su[3], su[4], 0}, {0, 0, 0}};
    double r2[3] = {ru[1], ru[2], 0};
    double q[3] = {};
    if (Solve(2, m2, r2, q) && q[0] >= 0 && q[1] > 0) {
      a_ = 0;
      b_ = q[0] / scale;
      c_ = q[1] / (scale * scale);
      return;
    }
  }
  // 3. A line (c = 0), as CostModel fits it: with too little spread in x the
  // slope is unknowable, so keep it and refit only the intercept.
  c_ = 0;
  const double mx = su[1];
  const double my = ru[0];
  const double var = su[2] - mx * mx;
  if (var > 1e-9 * std::max(1.0, mx * mx)) {
    b_ = std::max(0.0, (ru[1] - mx * my) / var) / scale;
  }
  a_ = std::max(0.0, my - b_ * scale * mx);
}

StageCostModel::StageCostModel(Duration fixed, Duration per_token)
    : encoder_(fixed, per_token),
      step_(Seconds(fixed), Seconds(per_token), 0.99),
      hift_(fixed, per_token) {}

Duration StageCostModel::Encoder(int rows, int64_t longest) const {
  return encoder_.Predict(static_cast<int64_t>(X(rows, longest)));
}

Duration StageCostModel::Step(int rows, int64_t longest) const {
  return FromSeconds(step_.Predict(X(rows, longest)));
}

Duration StageCostModel::Hift(int rows, int64_t longest) const {
  return hift_.Predict(static_cast<int64_t>(X(rows, longest)));
}

Duration StageCostModel::JoinOverhead() const {
  return FromSeconds(encoder_.fixed_seconds() + hift_.fixed_seconds());
}

void StageCostModel::ObserveEncoder(int rows, int64_t longest, Duration took) {
  encoder_.Observe(static_cast<int64_t>(X(rows, longest)), took);
}

void StageCostModel::ObserveStep(int rows, int64_t longest, Duration took) {
  step_.Observe(X(rows, longest), Seconds(took));
}

void StageCostModel::ObserveHift(int rows, int64_t longest, Duration took) {
  hift_.Observe(static_cast<int64_t>(X(rows, longest)), took);
}

int StageCostModel::BestRows(int64_t longest, int max_rows) const {
  max_rows = std::max(1, max_rows);
  std::vector<double> per_row(static_cast<size_t>(max_rows) + 1);
  double best = 0;
  for (int r = 1; r <= max_rows; ++r) {
    per_row[r] = step_.Predict(X(r, longest)) / r;
    if (r == 1 || per_row[r] < best) best = per_row[r];
  }
  int cap = 1;
  for (int r = 1; r <= max_rows; ++r) {
    if (per_row[r] <= best * (1 + kCapTolerance)) cap = r;
  }
  return cap;
}

}  // namespace vocoder::batcher

#include "batcher/cost_model.h"

#include <algorithm>
#include <chrono>

namespace vocoder::batcher {
namespace {
double Seconds(Duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

CostModel::CostModel(Duration fixed, Duration per_token, double decay)
    : decay_(decay), fixed_s_(Seconds(fixed)), per_token_s_(Seconds(per_token)) {}

Duration CostModel::Predict(int64_t padded_tokens) const {
  const double s = std::max(0.0, fixed_s_ + per_token_s_ * static_cast<double>(padded_tokens));
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

void CostModel::Observe(int64_t padded_tokens, Duration took) {
  const double x = static_cast<double>(padded_tokens);
  const double y = Seconds(took);
  w_ = decay_ * w_ + 1;
  sx_ = decay_ * sx_ + x;
  sy_ = decay_ * sy_ + y;
  sxx_ = decay_ * sxx_ + x * x;
  sxy_ = decay_ * sxy_ + x * y;
  const double mx = sx_ / w_;
  const double my = sy_ / w_;
  const double var = sxx_ / w_ - mx * mx;
  // With too little spread in batch sizes the slope is unknowable: keep the
  // current slope and refit only the intercept.
  if (var > 1e-9 * std::max(1.0, mx * mx)) {
    per_token_s_ = std::max(0.0, (sxy_ / w_ - mx * my) / var);
  }
  fixed_s_ = std::max(0.0, my - per_token_s_ * mx);
}

}  // namespace vocoder::batcher

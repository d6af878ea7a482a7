// Online model of batch run time: t = fixed + per_token * padded_tokens,
// fitted by exponentially weighted least squares over measured batches, so the
// deadline trigger knows how long a batch will take on this GPU and model.
//
// Thread-compatible: used by the batcher's thread only.
#ifndef VOCODER_BATCHER_COST_MODEL_H_
#define VOCODER_BATCHER_COST_MODEL_H_

#include <cstdint>

#include "batcher/clock.h"

namespace vocoder::batcher {

class CostModel {
 public:
  // `fixed` and `per_token` are the prior, used until measurements arrive.
  // `decay` in (0, 1): weight kept by older observations per new one.
  CostModel(Duration fixed, Duration per_token, double decay = 0.95);

  // Predicted run time of a batch of `padded_tokens` (rows x longest row).
  Duration Predict(int64_t padded_tokens) const;
  void Observe(int64_t padded_tokens, Duration took);

  double fixed_seconds() const { return fixed_s_; }
  double per_token_seconds() const { return per_token_s_; }

 private:
  double decay_;
  double fixed_s_;
  double per_token_s_;
  // Weighted sums of 1, x, y, x^2, x*y.
  double w_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_COST_MODEL_H_

// Row bookkeeping of a running set, shared by the runners' FlowBatch
// implementations (the LibTorch runner's and the simulator's), so both agree
// on ids, lengths, steps and errors. No torch here; the runners add their
// device state (the LibTorch runner its tensors, indexed by FlowRow::slot).
//
// Thread-compatible, like FlowBatch.
#ifndef VOCODER_MODEL_FLOW_ROWS_H_
#define VOCODER_MODEL_FLOW_ROWS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "model/manifest.h"
#include "model/vocoder.h"

namespace vocoder::model {

struct FlowRow {
  RowId id = 0;
  int n_timesteps = 0;
  int steps = 0;               // Euler steps taken
  int64_t prompt_tokens = 0;   // P
  int64_t frames = 0;          // valid frames: 2 (P + N), less the lookahead if not final
  int64_t emit_begin = 0;      // first emitted frame: 2 (P + context)
  int64_t slot = 0;            // the row's index in the runner's device tensors
  bool done() const { return steps >= n_timesteps; }
};

// InvalidArgument for a FlowBatch that another runner made.
absl::Status ForeignBatchError();

// The row a prepared job (PrepareJob passed) becomes at step 0.
FlowRow MakeFlowRow(const VocodeJob& job, int n_timesteps, const Manifest& manifest);

// Invariants: ids unique and increasing in row order; slots unique.
class FlowRows : public FlowBatch {
 public:
  explicit FlowRows(const Vocoder* owner) : owner_(owner) {}

  int rows() const override { return static_cast<int>(rows_.size()); }
  std::vector<RowId> row_ids() const override;
  int steps_taken(RowId row) const override;
  int n_timesteps(RowId row) const override;
  int64_t padded_frames() const override;
  int64_t frames(RowId row) const override;

  // The runner that made this set.
  const Vocoder* owner() const { return owner_; }
  // Index in row order of `id`, or -1.
  int Find(RowId id) const;
  const std::vector<FlowRow>& list() const { return rows_; }
  std::vector<FlowRow>& list() { return rows_; }
  // Gives `rows` fresh ids and appends them; returns the ids.
  std::vector<RowId> Append(std::vector<FlowRow> rows);
  // Removes the listed rows (which must be in the set), keeping the order of
  // the others.
  void Remove(absl::Span<const RowId> ids);

 private:
  const Vocoder* owner_;
  std::vector<FlowRow> rows_;
  RowId next_id_ = 0;
};

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_FLOW_ROWS_H_

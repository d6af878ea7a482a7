#include "model/flow_rows.h"

#include <algorithm>


namespace vocoder::model {

absl::Status ForeignBatchError() {
  return absl::InvalidArgumentError("flow batch was not made by this runner");
}

FlowRow MakeFlowRow(const VocodeJob& job, int n_timesteps, const Manifest& m) {
  FlowRow r;
  r.n_timesteps = n_timesteps;
  r.prompt_tokens = job.voice->prompt_tokens();
  const int64_t tokens = r.prompt_tokens + static_cast<int64_t>(job.tokens.size());
  r.frames = m.frames_per_token * tokens - (job.finalize ? 0 : m.lookahead_frames);
  r.emit_begin = m.frames_per_token * (r.prompt_tokens + job.context_tokens);
  return r;
}

std::vector<RowId> FlowRows::row_ids() const {
  std::vector<RowId> ids;
  ids.reserve(rows_.size());
  for (const FlowRow& r : rows_) ids.push_back(r.id);
  return ids;
}

int FlowRows::Find(RowId id) const {
  // Ids increase in row order.
  auto it = std::lower_bound(rows_.begin(), rows_.end(), id,
                             [](const FlowRow& r, RowId v) { return r.id < v; });
  if (it == rows_.end() || it->id != id) return -1;
  return static_cast<int>(it - rows_.begin());
}

int FlowRows::steps_taken(RowId row) const {
  const int i = Find(row);
  return i < 0 ? -1 : rows_[static_cast<size_t>(i)].steps;
}

int FlowRows::n_timesteps(RowId row) const {
  const int i = Find(row);
  return i < 0 ? 0 : rows_[static_cast<size_t>(i)].n_timesteps;
}

int64_t FlowRows::frames(RowId row) const {
  const int i = Find(row);
  return i < 0 ? 0 : rows_[static_cast<size_t>(i)].frames;
}

int64_t FlowRows::padded_frames() const {
  int64_t t = 0;
  for (const FlowRow& r : rows_) t = std::max(t, r.frames);
  return t;
}

std::vector<RowId> FlowRows::Append(std::vector<FlowRow> rows) {
  std::vector<RowId> ids;
  ids.reserve(rows.size());
  for (FlowRow& r : rows) {
    r.id = next_id_++;
    ids.push_back(r.id);
    rows_.push_back(r);
  }
  return ids;
}

void FlowRows::Remove(absl::Span<const RowId> ids) {
  std::erase_if(rows_, [&](const FlowRow& r) {
    return std::find(ids.begin(), ids.end(), r.id) != ids.end();
  });
}

}  // namespace vocoder::model

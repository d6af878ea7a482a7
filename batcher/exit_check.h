// When may the GPU thread stop? Once shutdown has begun, only when no job
// that Submit accepted can still reach the queue. Kept apart from the loop so
// that a test can replay every interleaving of a Submit against the check.
//
// Submit raises `submitting` before it reads `stopping`, and lowers it only
// after its push. With `stopping` already set (seq_cst), the check must read
// `submitting` FIRST and the queue SECOND:
//   - submitting == 0 means every Submit that passed its stopping check has
//     pushed, so the queue read that follows sees its job; any Submit that
//     raises the count later reads stopping == true and refuses.
// Read the other way round, a Submit that already passed its check can push
// and leave between the two reads: the queue looked empty, the count reads 0,
// the loop exits and an accepted job never completes.
//
// Thread-safety: called by the GPU thread only.
#ifndef VOCODER_BATCHER_EXIT_CHECK_H_
#define VOCODER_BATCHER_EXIT_CHECK_H_

namespace vocoder::batcher {

class ExitProbe {
 public:
  virtual ~ExitProbe() = default;
  // Submit calls between raising and lowering the in-flight count.
  virtual int Submitting() const = 0;
  // No node queued or being pushed.
  virtual bool QueueEmpty() const = 0;
};

// True when no accepted job can land any more. Precondition: stopping is set.
inline bool NoSubmitCanLand(const ExitProbe& probe) {
  if (probe.Submitting() != 0) return false;  // first: see the file comment
  return probe.QueueEmpty();
}

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_EXIT_CHECK_H_

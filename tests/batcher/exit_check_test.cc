// The GPU thread's exit check against every interleaving of one Submit.
// A Submit is a program of atomic steps (exit_check.h); the probe lets the
// producer take some steps before each of the check's reads, for every split.
#include "batcher/exit_check.h"

#include <gtest/gtest.h>

#include <vector>

namespace vocoder::batcher {
namespace {

// Submit's steps once Shutdown has set stopping. A Submit that read
// stopping == false before that is past its check: only push and leave
// remain. One that has not raised its count yet will raise it, read
// stopping == true, and leave without pushing.
enum class Step { kRaise, kPush, kLower };

class ScriptedSubmit final : public ExitProbe {
 public:
  ScriptedSubmit(int submitting, std::vector<Step> steps, std::vector<int> steps_before_read)
      : submitting_(submitting), steps_(std::move(steps)), before_(std::move(steps_before_read)) {}

  int Submitting() const override {
    Advance();
    return submitting_;
  }
  bool QueueEmpty() const override {
    Advance();
    return !pushed_;
  }
  // After the check: the producer finishes. True if its job is in the queue.
  bool FinishAndPushed() const {
    while (next_ < steps_.size()) Run(steps_[next_++]);
    return pushed_;
  }

 private:
  void Advance() const {
    const int n = reads_ < before_.size() ? before_[reads_] : 0;
    ++reads_;
    for (int i = 0; i < n && next_ < steps_.size(); ++i) Run(steps_[next_++]);
  }
  void Run(Step s) const {
    switch (s) {
      case Step::kRaise:
        ++submitting_;
        break;
      case Step::kPush:
        pushed_ = true;
        break;
      case Step::kLower:
        --submitting_;
        break;
    }
  }

  mutable int submitting_;
  mutable bool pushed_ = false;
  std::vector<Step> steps_;
  std::vector<int> before_;
  mutable size_t next_ = 0;
  mutable size_t reads_ = 0;
};

TEST(BatcherExitCheckTest, NeverExitsWhileAnAcceptedSubmitCanStillPush) {
  // Past its stopping check (count already raised): push, then lower.
  const std::vector<Step> accepted = {Step::kPush, Step::kLower};
  int exits = 0;
  for (int a = 0; a <= 2; ++a) {
    for (int b = 0; b <= 2 - a; ++b) {
      ScriptedSubmit probe(/*submitting=*/1, accepted, {a, b});
      const bool exit = NoSubmitCanLand(probe);
      if (exit) ++exits;
      // Exiting is correct only if the job will not land in the queue after.
      EXPECT_FALSE(exit && probe.FinishAndPushed())
          << "exit check passed with " << a << " then " << b
          << " producer steps before its reads: the accepted job is lost";
    }
  }
  EXPECT_EQ(exits, 0) << "an accepted Submit in flight must always hold the loop";
}

TEST(BatcherExitCheckTest, ExitsOnceTheSubmitHasLandedAndTheQueueIsSeen) {
  ScriptedSubmit landed(/*submitting=*/0, {}, {});
  EXPECT_TRUE(NoSubmitCanLand(landed));  // nothing in flight, queue empty
}

TEST(BatcherExitCheckTest, ARefusedSubmitLosesNothingAndLetsTheLoopExit) {
  // Not yet past its check: it raises, reads stopping == true, lowers, and
  // never pushes. Whatever the split, exiting loses nothing; once it left,
  // the check passes.
  const std::vector<Step> refused = {Step::kRaise, Step::kLower};
  for (int a = 0; a <= 2; ++a) {
    for (int b = 0; b <= 2 - a; ++b) {
      ScriptedSubmit probe(0, refused, {a, b});
      const bool exit = NoSubmitCanLand(probe);
      EXPECT_FALSE(exit && probe.FinishAndPushed());
      probe.FinishAndPushed();
      EXPECT_TRUE(NoSubmitCanLand(probe)) << "split " << a << " then " << b;
    }
  }
}

}  // namespace
}  // namespace vocoder::batcher

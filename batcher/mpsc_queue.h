// Intrusive multi-producer single-consumer queue after Dmitry Vyukov's
// algorithm (the one gRPC uses in src/core/util/mpscq.h).
//
// Why this and not moodycamel::ConcurrentQueue: Push is wait-free (one XCHG
// and one store), allocates nothing (the node lives inside the Job), and the
// queue is linearizable: a stream's chunks, submitted in order from whatever
// gRPC thread ran its reaction, are popped in that order. moodycamel is FIFO
// only per producer token, which one stream hopping threads does not have.
//
// Caveat (documented by Vyukov and gRPC): Pop can return null while a push is
// half done (XCHG done, link not yet stored). Never conclude "empty" from a
// null Pop: use Empty(), which looks at the producers' end.
#ifndef VOCODER_BATCHER_MPSC_QUEUE_H_
#define VOCODER_BATCHER_MPSC_QUEUE_H_

#include <atomic>
#include <cassert>

namespace vocoder::batcher {

struct MpscNode {
  std::atomic<MpscNode*> next{nullptr};
};

class MpscQueue {
 public:
  MpscQueue() = default;
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;
  // The queue must be empty: nodes are owned by the caller.
  ~MpscQueue() { assert(Empty()); }

  // Thread-safe, wait-free. The queue does not own `node`; it must stay alive
  // until popped.
  void Push(MpscNode* node) { PushNode(node); }

  // Thread-compatible: one consumer at a time. Returns the oldest node, or
  // null when the queue is empty or a push is in progress.
  MpscNode* Pop() {
    MpscNode* tail = tail_;
    MpscNode* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) return nullptr;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire)) return nullptr;  // push in progress
    PushNode(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next != nullptr) {
      tail_ = next;
      return tail;
    }
    return nullptr;  // another push raced ahead of the stub; it completes soon
  }

  // Consumer only. True when no node is queued or being pushed. seq_cst so it
  // pairs with the eventcount in clock.h.
  bool Empty() const { return tail_ == &stub_ && head_.load(std::memory_order_seq_cst) == &stub_; }

 private:
  void PushNode(MpscNode* node) {
    node->next.store(nullptr, std::memory_order_relaxed);
    MpscNode* prev = head_.exchange(node, std::memory_order_seq_cst);
    prev->next.store(node, std::memory_order_release);
  }

  MpscNode stub_;
  alignas(64) std::atomic<MpscNode*> head_{&stub_};  // producers' end
  alignas(64) MpscNode* tail_ = &stub_;              // consumer's end
};

}  // namespace vocoder::batcher

#endif  // VOCODER_BATCHER_MPSC_QUEUE_H_

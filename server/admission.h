// Admission of vocoding calls (StreamVocode and Vocode): readiness, drain,
// the --max-streams cap and a per-peer share of it.
//
// Reserve first: TryAdmit increments the open-call count before it checks the
// cap and the drain flag, and rolls back on refusal, so concurrent opens never
// exceed the cap and no call slips in after a drain saw zero calls (the drain
// sets `draining` then reads the count; an admit increments the count then
// reads `draining`; both seq_cst, so at least one of them sees the other).
//
// Thread-safe.
#ifndef VOCODER_SERVER_ADMISSION_H_
#define VOCODER_SERVER_ADMISSION_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "server/sync.h"

namespace vocoder::server {

// Process-wide serving state shared by the service and the lifecycle code.
struct ServingState {
  std::atomic<bool> ready{false};     // model loaded and warmed up
  std::atomic<bool> draining{false};  // SIGTERM received
  std::atomic<int> streams{0};        // admitted StreamVocode and Vocode calls
  std::atomic<uint64_t> next_stream_id{1};
};

// Why TryAdmit refused (for the rejections metric).
enum class Refusal { kNone, kDraining, kNotReady, kStreamCap, kPeerCap };

class Admission {
 public:
  // max_per_peer <= 0: no per-peer share.
  Admission(ServingState& state, int max_streams, int max_per_peer)
      : state_(state), max_(max_streams), max_per_peer_(max_per_peer) {}

  // Reserves one call slot for `peer` (its address without the port), or
  // returns UNAVAILABLE (draining, not ready) or RESOURCE_EXHAUSTED (cap,
  // per-peer share) and sets *why.
  absl::Status TryAdmit(const std::string& peer, Refusal* why);
  // Gives back a slot TryAdmit reserved.
  void Release(const std::string& peer);

  // Drain: sets draining (readiness is the caller's), then waits until no
  // call is open, `deadline` passes or Interrupt() is called. True when no
  // call is open.
  bool DrainAndWait(std::chrono::steady_clock::time_point deadline);
  // Ends a DrainAndWait at once (second signal). Thread-safe, idempotent.
  void Interrupt();
  // Blocks until no call is open or `deadline` passes (tests, drain).
  bool WaitForNoCalls(std::chrono::steady_clock::time_point deadline);

  int open() const { return state_.streams.load(); }
  int max_streams() const { return max_; }
  int max_per_peer() const { return max_per_peer_; }

 private:
  void Unreserve();

  ServingState& state_;
  const int max_;
  const int max_per_peer_;
  Mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, int> per_peer_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> interrupted_{false};  // set under mu_ (for the wake-up)
};

// "ipv4:10.0.0.1:5555" -> "ipv4:10.0.0.1", "ipv6:[::1]:80" -> "ipv6:[::1]";
// anything else (unix sockets) unchanged.
std::string PeerHost(const std::string& peer);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_ADMISSION_H_

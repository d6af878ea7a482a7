#include "server/admission.h"

#include "absl/strings/str_cat.h"

namespace vocoder::server {

absl::Status Admission::TryAdmit(const std::string& peer, Refusal* why) {
  *why = Refusal::kNone;
  if (state_.draining.load()) {
    *why = Refusal::kDraining;
    return absl::UnavailableError("server is draining; retry on another replica");
  }
  if (!state_.ready.load()) {
    *why = Refusal::kNotReady;
    return absl::UnavailableError("model is not loaded yet; retry shortly");
  }
  // Reserve, then check: see the file comment.
  const int open = state_.streams.fetch_add(1) + 1;
  if (state_.draining.load()) {
    Unreserve();
    *why = Refusal::kDraining;
    return absl::UnavailableError("server is draining; retry on another replica");
  }
  if (open > max_) {
    Unreserve();
    *why = Refusal::kStreamCap;
    return absl::ResourceExhaustedError(
        absl::StrCat("stream limit reached (", max_,
                     " concurrent, --max-streams); retry after a short backoff"));
  }
  if (max_per_peer_ > 0) {
    bool over = false;
    {
      MutexLock lock(mu_);
      int& mine = per_peer_[peer];
      if (mine >= max_per_peer_) {
        over = true;
        if (mine == 0) per_peer_.erase(peer);
      } else {
        ++mine;
      }
    }
    if (over) {
      Unreserve();
      *why = Refusal::kPeerCap;
      return absl::ResourceExhaustedError(absl::StrCat(
          "per-client stream limit reached (", max_per_peer_,
          " concurrent from one address, --max-streams-per-peer); retry after a short backoff"));
    }
  }
  return absl::OkStatus();
}

void Admission::Release(const std::string& peer) {
  if (max_per_peer_ > 0) {
    MutexLock lock(mu_);
    auto it = per_peer_.find(peer);
    if (it != per_peer_.end() && --it->second <= 0) per_peer_.erase(it);
  }
  Unreserve();
}

void Admission::Unreserve() {
  if (state_.streams.fetch_sub(1) == 1) {
    // The last call: wake a drain. Taking the mutex orders this notify after
    // a waiter's check of the count (no lost wake-up).
    MutexLock lock(mu_);
    changed_.notify_all();
  }
}

bool Admission::WaitForNoCalls(std::chrono::steady_clock::time_point deadline) {
  MutexLock lock(mu_);
  while (state_.streams.load() != 0 && !interrupted_.load()) {
    if (!mu_.WaitUntil(changed_, deadline)) break;
  }
  return state_.streams.load() == 0;
}

bool Admission::DrainAndWait(std::chrono::steady_clock::time_point deadline) {
  state_.draining.store(true);
  return WaitForNoCalls(deadline);
}

void Admission::Interrupt() {
  MutexLock lock(mu_);
  interrupted_.store(true);
  changed_.notify_all();
}

std::string PeerHost(const std::string& peer) {
  if (peer.rfind("ipv4:", 0) != 0 && peer.rfind("ipv6:", 0) != 0) return peer;
  const auto colon = peer.rfind(':');
  if (colon == std::string::npos || colon < 5) return peer;
  return peer.substr(0, colon);
}

}  // namespace vocoder::server

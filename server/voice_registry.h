// Registered voices by id: loaded from the voices directory at start and
// managed through the Voice RPCs. Each entry carries its content fingerprint
// (the batcher's grouping key) and the voice prepared on the device.
//
// Thread-safe. Entries are shared: deleting a voice does not disturb streams
// that already use it.
#ifndef VOCODER_SERVER_VOICE_REGISTRY_H_
#define VOCODER_SERVER_VOICE_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "batcher/job.h"
#include "model/vocoder.h"

namespace vocoder::server {

struct VoiceEntry {
  std::string id;
  std::string display_name;
  int64_t create_time_unix_ms = 0;
  batcher::Fingerprint fingerprint;
  std::shared_ptr<const model::Voice> voice;
};

class VoiceRegistry {
 public:
  VoiceRegistry(model::Vocoder& vocoder, int max_voices) : vocoder_(vocoder), max_(max_voices) {}

  // Loads every <id>.pt in `dir` (missing dir: OK, nothing loaded).
  absl::Status LoadDirectory(const std::string& dir);
  // InvalidArgument (bad id or conditioning), AlreadyExists, ResourceExhausted (max voices).
  absl::StatusOr<VoiceEntry> Register(const std::string& id, const std::string& display_name,
                                      model::VoiceData data);
  absl::StatusOr<VoiceEntry> Get(const std::string& id) const;  // NotFound
  std::vector<VoiceEntry> List() const;                         // sorted by id
  absl::Status Delete(const std::string& id);                   // NotFound
  size_t size() const;

 private:
  model::Vocoder& vocoder_;
  const int max_;
  mutable std::mutex mu_;
  std::map<std::string, VoiceEntry> voices_;  // guarded by mu_
};

// [A-Za-z0-9._-]{1,64}.
absl::Status ValidateVoiceId(const std::string& id);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_VOICE_REGISTRY_H_

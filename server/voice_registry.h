// The voice repository: a directory (--voices-dir; on Kubernetes the shared
// ReadWriteMany volume) that is the source of truth for voices, and this
// replica's view of it. Every replica over the same directory serves the
// same voices.
//
// Files. `<id>.voice` (server/voice_file.h: written by RegisterVoice, with a
// checksum) and `<id>.pt` (the export tool's tensor bags). Registration
// writes `.voice-tmp-*`, fsyncs it and links it to `<id>.voice`: the link is
// an exclusive create on the shared filesystem, so of two replicas
// registering one id at once exactly one succeeds, and a crash mid-write
// leaves only a temporary name that is never loaded (and is removed after an
// hour). Delete unlinks the file. A read-only directory (ConfigMap, image
// layer) serves its voices; Register and Delete then fail with
// FailedPrecondition.
//
// Sync. A background thread rescans the directory every `sync_interval` and
// whenever inotify reports a change (network filesystems often deliver no
// events: the polling is the guarantee). Additions, changes (a different
// inode, size or mtime) and deletions reach every replica within the
// interval. Get() also revalidates on use (one stat): a voice registered or
// deleted on another replica is seen by the next stream at once, without
// waiting for the scan. A file that fails to load (torn, corrupt, invalid) is
// logged and counted once, then ignored until it changes.
//
// Memory. Metadata of every voice stays in memory; the voice prepared on the
// device is held for the voices in use (streams own a reference) and for the
// most recently used ones up to `cache_bytes`. An evicted voice is reloaded
// from the repository on its next Get (counted, timed).
//
// Thread-safety: thread-safe. Get/Describe/List never wait for a scan unless
// they must load a file. Entries are shared: a stream that holds a voice
// keeps it when it is deleted or replaced; new streams see the change.
#ifndef VOCODER_SERVER_VOICE_REGISTRY_H_
#define VOCODER_SERVER_VOICE_REGISTRY_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "batcher/job.h"
#include "model/vocoder.h"
#include "server/sync.h"

namespace prometheus {
class Registry;
}

namespace vocoder::server {

inline constexpr int kMaxDisplayNameBytes = 256;

struct VoiceEntry {
  std::string id;
  std::string display_name;
  int64_t create_time_unix_ms = 0;  // from the file: equal on every replica
  batcher::Fingerprint fingerprint;
  int prompt_tokens = 0;
  // The voice on the device: set by Get and Register; null in List/Describe.
  std::shared_ptr<const model::Voice> voice;
};

struct VoiceRegistryOptions {
  std::string dir;  // the repository; created on the first registration
  int max_voices = 1024;
  // Device-resident voices not in use, by estimated bytes; 0 = no limit.
  int64_t cache_bytes = 0;
  std::chrono::milliseconds sync_interval{2000};
  bool inotify = true;
  int max_display_name_bytes = kMaxDisplayNameBytes;
  // Optional: vocoder_voice_* metrics are registered here.
  prometheus::Registry* metrics = nullptr;
};

class VoiceRegistry {
 public:
  VoiceRegistry(model::Vocoder& vocoder, VoiceRegistryOptions options);
  ~VoiceRegistry();  // stops the sync thread
  VoiceRegistry(const VoiceRegistry&) = delete;
  VoiceRegistry& operator=(const VoiceRegistry&) = delete;

  // One scan of the repository now (the start-up load and the sync thread's
  // step). Files that fail to load are counted, not returned: returns OK
  // unless the directory exists and cannot be read. Blocks while it loads.
  absl::Status Sync();
  // Starts the background sync (after the first Sync). Idempotent.
  void StartSync();

  // Writes the voice to the repository, then serves it. InvalidArgument (id,
  // display name, conditioning), AlreadyExists (on this or any replica),
  // ResourceExhausted (max voices), FailedPrecondition (read-only
  // repository), Unavailable (I/O error). Blocks (device upload, fsync).
  absl::StatusOr<VoiceEntry> Register(const std::string& id, const std::string& display_name,
                                      model::VoiceData data);
  // The voice ready for a stream (loaded from the repository if this replica
  // has not seen it yet or evicted it). NotFound. May block on a load.
  absl::StatusOr<VoiceEntry> Get(const std::string& id);
  // Metadata only (no device load). NotFound.
  absl::StatusOr<VoiceEntry> Describe(const std::string& id);
  std::vector<VoiceEntry> List() const;  // metadata, sorted by id
  // Removes the voice from the repository. NotFound, FailedPrecondition
  // (read-only), Unavailable (I/O error).
  absl::Status Delete(const std::string& id);
  size_t size() const;

  // Observability (tests, benchmarks).
  size_t resident() const;         // voices held on the device by the cache
  int64_t resident_bytes() const;  // their estimated bytes
  int64_t evictions() const;
  int64_t reloads() const;
  int64_t load_failures() const;
  const std::string& dir() const { return o_.dir; }
  // Runs in Register after the voice is prepared, before the file is written
  // (tests: a slow or stuck shared filesystem). Set before use.
  void SetBeforeWriteForTest(std::function<void()> hook) { before_write_ = std::move(hook); }

 private:
  struct FileSig {
    uint64_t dev = 0, ino = 0;
    int64_t size = 0, mtime_ns = 0;
    friend bool operator==(const FileSig&, const FileSig&) = default;
  };
  struct Slot {
    VoiceEntry meta;  // voice unset
    std::string path;
    FileSig sig;
    std::shared_ptr<const model::Voice> resident;  // held by the cache
    std::weak_ptr<const model::Voice> weak;        // held by streams
    int64_t bytes = 0;
    std::list<std::string>::iterator lru;
    bool in_lru = false;
  };
  struct Loaded {
    VoiceEntry entry;  // with voice
    FileSig sig;
    std::string path;
  };
  struct Metrics;

  // Reads, validates and prepares one file. Counts and logs a failure once
  // per file version (bad_). Requires repo_mu_.
  absl::StatusOr<Loaded> LoadFileLocked(const std::string& id, const std::string& path,
                                        const FileSig& sig) ABSL_EXCLUSIVE_LOCKS_REQUIRED(repo_mu_);
  // Finds id's file on disk (`.voice`, else `.pt`): NotFound if neither.
  absl::StatusOr<std::pair<std::string, FileSig>> Locate(const std::string& id) const;
  void InsertLocked(Loaded loaded) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(Slot& slot, std::shared_ptr<const model::Voice> voice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Get/Describe: the slot revalidated against the file (loads on miss or
  // change, erases on deletion). With `load`, the voice is on the device.
  absl::StatusOr<VoiceEntry> Lookup(const std::string& id, bool load);
  void SyncLoop();

  model::Vocoder& vocoder_;
  const VoiceRegistryOptions o_;
  std::unique_ptr<Metrics> metrics_;
  std::function<void()> before_write_;

  // Serializes what changes the repository or loads from it: scans,
  // registration's write, delete, reloads. Taken before mu_, never after.
  Mutex repo_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::map<std::string, FileSig> bad_ ABSL_GUARDED_BY(repo_mu_);  // path -> failed version
  bool first_sync_done_ ABSL_GUARDED_BY(repo_mu_) = false;

  mutable Mutex mu_;
  std::map<std::string, Slot> voices_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // front: most recently used
  int64_t resident_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reloads_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t load_failures_ ABSL_GUARDED_BY(mu_) = 0;

  Mutex sync_mu_;
  std::condition_variable sync_cv_;
  bool stop_ ABSL_GUARDED_BY(sync_mu_) = false;
  int wake_fd_ = -1;  // eventfd: wakes the sync thread's poll to stop
  std::thread sync_thread_;
};

// [A-Za-z0-9._-]{1,64}, not starting with '.'.
absl::Status ValidateVoiceId(const std::string& id);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_VOICE_REGISTRY_H_

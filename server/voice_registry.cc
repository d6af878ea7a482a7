#include "server/voice_registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "server/model_runner.h"
#include "server/voice_file.h"

namespace vocoder::server {
namespace {

constexpr char kTempPrefix[] = ".voice-tmp-";
constexpr char kTensorBagSuffix[] = ".pt";
// A temporary file this old is a crashed registration's: removed by the scan.
constexpr auto kStaleTemp = std::chrono::hours(1);

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void LogWarning(const std::string& message) {
  std::fprintf(stderr, "vocoderd: voice repository: %s\n", message.c_str());
}

std::string ErrnoText(int err) { return std::strerror(err); }

bool IsReadOnlyErrno(int err) { return err == EROFS || err == EACCES || err == EPERM; }

// Host copy plus device copy of the conditioning.
int64_t VoiceBytes(const model::VoiceData& d) {
  return 2 * static_cast<int64_t>(d.prompt_tokens.size() * sizeof(int64_t) +
                                  d.prompt_feat.size() * sizeof(float) +
                                  d.embedding.size() * sizeof(float));
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, int64_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", ErrnoText(errno)));
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(absl::StrCat(path, ": ", ErrnoText(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (static_cast<int64_t>(out.size()) > limit) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": larger than ", limit, " bytes"));
    }
  }
  ::close(fd);
  return out;
}

absl::Status WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(ErrnoText(errno));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// link(2), else renameat2(RENAME_NOREPLACE) where hard links are not
// supported: both fail with EEXIST when `to` exists. Returns errno or 0.
int ExclusiveCreate(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return 0;
  const int err = errno;
  if (err != EPERM && err != ENOTSUP && err != EOPNOTSUPP && err != ENOSYS) return err;
#ifdef SYS_renameat2
  constexpr unsigned kRenameNoReplace = 1;
  if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), kRenameNoReplace) ==
      0) {
    return 0;
  }
  return errno;
#else
  return err;
#endif
}

}  // namespace

struct VoiceRegistry::Metrics {
  explicit Metrics(prometheus::Registry& r)
      : resident(prometheus::BuildGauge()
                     .Name("vocoder_voices_resident")
                     .Help("Voices held on the device by the voice cache (not counting voices "
                           "only held by open streams)")
                     .Register(r)
                     .Add({})),
        resident_bytes(prometheus::BuildGauge()
                           .Name("vocoder_voices_resident_bytes")
                           .Help("Estimated bytes (host and device) of the cached voices; bounded "
                                 "by --voice-cache-mb")
                           .Register(r)
                           .Add({})),
        failures_family(prometheus::BuildCounter()
                            .Name("vocoder_voice_load_failures_total")
                            .Help("Voice files that failed to load, once per file version, by "
                                  "reason (corrupt: torn or bad checksum; invalid: bad "
                                  "conditioning or id; io: unreadable)")
                            .Register(r)),
        corrupt(failures_family.Add({{"reason", "corrupt"}})),
        invalid(failures_family.Add({{"reason", "invalid"}})),
        io(failures_family.Add({{"reason", "io"}})),
        evictions(prometheus::BuildCounter()
                      .Name("vocoder_voice_evictions_total")
                      .Help("Voices dropped from the device by the voice cache budget")
                      .Register(r)
                      .Add({})),
        reloads(prometheus::BuildCounter()
                    .Name("vocoder_voice_reloads_total")
                    .Help("Evicted voices loaded again from the repository for a stream")
                    .Register(r)
                    .Add({})),
        reload_seconds(
            prometheus::BuildHistogram()
                .Name("vocoder_voice_reload_seconds")
                .Help("Time a stream waited for an evicted voice to load again")
                .Register(r)
                .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                 0.05, 0.1, 0.25, 0.5, 1})),
        sync_lag(prometheus::BuildHistogram()
                     .Name("vocoder_voice_sync_lag_seconds")
                     .Help("From a voice file's modification (on any replica) to this replica "
                           "serving it, for changes seen after start")
                     .Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                                      2.5, 5, 10, 30, 60})),
        last_sync(prometheus::BuildGauge()
                      .Name("vocoder_voice_repository_last_sync_time_seconds")
                      .Help("Unix time of this replica's last completed scan of the voice "
                            "repository")
                      .Register(r)
                      .Add({})) {}
  prometheus::Gauge& resident;
  prometheus::Gauge& resident_bytes;
  prometheus::Family<prometheus::Counter>& failures_family;
  prometheus::Counter& corrupt;
  prometheus::Counter& invalid;
  prometheus::Counter& io;
  prometheus::Counter& evictions;
  prometheus::Counter& reloads;
  prometheus::Histogram& reload_seconds;
  prometheus::Histogram& sync_lag;
  prometheus::Gauge& last_sync;
};

absl::Status ValidateVoiceId(const std::string& id) {
  const bool ok =
      !id.empty() && id.size() <= 64 && id[0] != '.' &&
      std::all_of(id.begin(), id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("voice_id '", id.substr(0, 80),
                   "' must be 1-64 characters of [A-Za-z0-9._-], not starting "
                   "with '.'"));
}

VoiceRegistry::VoiceRegistry(model::Vocoder& vocoder, VoiceRegistryOptions options)
    : vocoder_(vocoder), o_(std::move(options)) {
  if (o_.metrics != nullptr) metrics_ = std::make_unique<Metrics>(*o_.metrics);
}

VoiceRegistry::~VoiceRegistry() {
  {
    MutexLock lock(sync_mu_);
    stop_ = true;
  }
  sync_cv_.notify_all();
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  if (sync_thread_.joinable()) sync_thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

absl::StatusOr<std::pair<std::string, VoiceRegistry::FileSig>> VoiceRegistry::Locate(
    const std::string& id) const {
  for (const char* suffix : {kVoiceFileSuffix, kTensorBagSuffix}) {
    std::string path = absl::StrCat(o_.dir, "/", id, suffix);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      return std::make_pair(std::move(path),
                            FileSig{st.st_dev, st.st_ino, st.st_size,
                                    st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec});
    }
  }
  return absl::NotFoundError(absl::StrCat("voice '", id, "' is not registered"));
}

absl::StatusOr<VoiceRegistry::Loaded> VoiceRegistry::LoadFileLocked(const std::string& id,
                                                                    const std::string& path,
                                                                    const FileSig& sig) {
  if (auto it = bad_.find(path); it != bad_.end() && it->second == sig) {
    return absl::DataLossError(absl::StrCat(path, ": failed to load before and has not changed"));
  }
  VoiceRecord record;
  absl::Status s = ValidateVoiceId(id);
  if (s.ok() && EndsWith(path, kVoiceFileSuffix)) {
    auto bytes = ReadWholeFile(path, int64_t{64} << 20);
    if (!bytes.ok()) {
      s = bytes.status();
    } else {
      auto decoded = DecodeVoiceFile(*bytes);
      if (!decoded.ok()) {
        s = decoded.status();
      } else if (decoded->id != id) {
        s = absl::InvalidArgumentError(
            absl::StrCat("file holds voice '", decoded->id, "', not '", id, "'"));
      } else {
        record = std::move(*decoded);
      }
    }
  } else if (s.ok()) {
    auto data = model::ReadVoiceFile(path);
    if (!data.ok()) {
      s = data.status();
    } else {
      record.id = id;
      record.create_time_unix_ms = sig.mtime_ns / 1'000'000;
      record.data = std::move(*data);
    }
  }
  if (s.ok() && static_cast<int>(record.display_name.size()) > o_.max_display_name_bytes) {
    s = absl::InvalidArgumentError("display name too long");
  }
  Loaded out;
  if (s.ok()) {
    out.entry.id = id;
    out.entry.display_name = record.display_name;
    out.entry.create_time_unix_ms = record.create_time_unix_ms;
    out.entry.fingerprint = VoiceFingerprint(record.data);
    out.entry.prompt_tokens = static_cast<int>(record.data.prompt_tokens.size());
    auto voice = vocoder_.PrepareVoice(std::move(record.data));  // validates
    if (voice.ok()) {
      out.entry.voice = *voice;
    } else {
      s = voice.status();
    }
  }
  if (!s.ok()) {
    bad_[path] = sig;
    LogWarning(absl::StrCat("ignoring ", path, " until it changes: ", s.ToString()));
    {
      MutexLock lock(mu_);
      ++load_failures_;
    }
    if (metrics_ != nullptr) {
      (s.code() == absl::StatusCode::kDataLoss ? metrics_->corrupt
       : s.code() == absl::StatusCode::kInvalidArgument ||
               s.code() == absl::StatusCode::kFailedPrecondition
           ? metrics_->invalid
           : metrics_->io)
          .Increment();
    }
    return s;
  }
  bad_.erase(path);
  out.sig = sig;
  out.path = path;
  return out;
}

void VoiceRegistry::InsertLocked(Loaded loaded) {
  EraseLocked(loaded.entry.id);
  Slot& slot = voices_[loaded.entry.id];
  slot.path = std::move(loaded.path);
  slot.sig = loaded.sig;
  std::shared_ptr<const model::Voice> voice = std::move(loaded.entry.voice);
  slot.meta = std::move(loaded.entry);
  slot.bytes = VoiceBytes(voice->data);
  TouchLocked(slot, std::move(voice));
}

void VoiceRegistry::EraseLocked(const std::string& id) {
  auto it = voices_.find(id);
  if (it == voices_.end()) return;
  if (it->second.in_lru) {
    lru_.erase(it->second.lru);
    resident_bytes_ -= it->second.bytes;
  }
  voices_.erase(it);
  UpdateGaugesLocked();
}

void VoiceRegistry::TouchLocked(Slot& slot, std::shared_ptr<const model::Voice> voice) {
  if (slot.in_lru) {
    lru_.splice(lru_.begin(), lru_, slot.lru);
  } else {
    lru_.push_front(slot.meta.id);
    slot.lru = lru_.begin();
    slot.in_lru = true;
    resident_bytes_ += slot.bytes;
  }
  slot.weak = voice;
  slot.resident = std::move(voice);
  EvictLocked();
}

void VoiceRegistry::EvictLocked() {
  // The most recently used voice always stays: a budget smaller than one
  // voice still serves it.
  while (o_.cache_bytes > 0 && resident_bytes_ > o_.cache_bytes && lru_.size() > 1) {
    Slot& victim = voices_.at(lru_.back());
    lru_.pop_back();
    victim.in_lru = false;
    victim.resident.reset();  // streams using it keep it through `weak`
    resident_bytes_ -= victim.bytes;
    ++evictions_;
    if (metrics_ != nullptr) metrics_->evictions.Increment();
  }
  UpdateGaugesLocked();
}

void VoiceRegistry::UpdateGaugesLocked() {
  if (metrics_ == nullptr) return;
  metrics_->resident.Set(static_cast<double>(lru_.size()));
  metrics_->resident_bytes.Set(static_cast<double>(resident_bytes_));
}

absl::Status VoiceRegistry::Sync() {
  MutexLock repo(repo_mu_);
  DIR* d = ::opendir(o_.dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    if (err != ENOENT) {
      return absl::UnavailableError(
          absl::StrCat("cannot read the voice repository ", o_.dir, ": ", ErrnoText(err)));
    }
    MutexLock lock(mu_);  // no directory: no voices
    while (!voices_.empty()) EraseLocked(voices_.begin()->first);
    first_sync_done_ = true;
    return absl::OkStatus();
  }
  std::map<std::string, std::pair<std::string, FileSig>> found;
  const auto now = std::chrono::system_clock::now();
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const std::string path = absl::StrCat(o_.dir, "/", name);
    struct stat st {};
    if (name.rfind(kTempPrefix, 0) == 0) {
      if (::stat(path.c_str(), &st) == 0 &&
          now - std::chrono::system_clock::from_time_t(st.st_mtime) > kStaleTemp) {
        ::unlink(path.c_str());  // a crashed registration's leftovers
      }
      continue;
    }
    if (name.empty() || name[0] == '.') continue;
    std::string id;
    if (EndsWith(name, kVoiceFileSuffix)) {
      id = name.substr(0, name.size() - std::strlen(kVoiceFileSuffix));
    } else if (EndsWith(name, kTensorBagSuffix)) {
      id = name.substr(0, name.size() - std::strlen(kTensorBagSuffix));
      if (found.count(id) > 0) continue;  // `.voice` wins over `.pt`
    } else {
      continue;
    }
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    found[id] = {path, FileSig{st.st_dev, st.st_ino, st.st_size,
                               st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec}};
  }
  ::closedir(d);

  std::vector<std::string> gone, wanted;
  {
    MutexLock lock(mu_);
    for (const auto& [id, slot] : voices_) {
      if (found.count(id) == 0) gone.push_back(id);
    }
    for (const auto& [id, file] : found) {
      auto it = voices_.find(id);
      if (it == voices_.end() || it->second.sig != file.second || it->second.path != file.first) {
        wanted.push_back(id);
      }
    }
    for (const auto& id : gone) EraseLocked(id);
  }
  for (auto it = bad_.begin(); it != bad_.end();) {  // forget removed bad files
    struct stat st {};
    it = ::stat(it->first.c_str(), &st) == 0 ? std::next(it) : bad_.erase(it);
  }
  for (const auto& id : wanted) {
    {
      MutexLock lock(mu_);
      if (static_cast<int>(voices_.size()) >= o_.max_voices && voices_.count(id) == 0) {
        LogWarning(absl::StrCat("more than --max-voices=", o_.max_voices, " voices in ", o_.dir,
                                "; not loading '", id, "'"));
        continue;
      }
    }
    const auto& [path, sig] = found[id];
    auto loaded = LoadFileLocked(id, path, sig);
    if (!loaded.ok()) continue;
    if (first_sync_done_ && metrics_ != nullptr) {
      const double lag_s = static_cast<double>(NowUnixMs() * 1'000'000 - sig.mtime_ns) / 1e9;
      metrics_->sync_lag.Observe(std::max(0.0, lag_s));
    }
    MutexLock lock(mu_);
    InsertLocked(std::move(*loaded));
  }
  first_sync_done_ = true;
  if (metrics_ != nullptr) metrics_->last_sync.Set(static_cast<double>(NowUnixMs()) / 1000.0);
  return absl::OkStatus();
}

void VoiceRegistry::StartSync() {
  if (sync_thread_.joinable()) return;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  sync_thread_ = std::thread([this] { SyncLoop(); });
}

void VoiceRegistry::SyncLoop() {
  int inotify_fd = -1;
  auto watch = [&] {
    if (!o_.inotify || inotify_fd >= 0) return;
    inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd < 0) return;
    if (::inotify_add_watch(inotify_fd, o_.dir.c_str(),
                            IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
      ::close(inotify_fd);  // no directory yet, or no inotify: polling only
      inotify_fd = -1;
    }
  };
  watch();
  auto next_scan = std::chrono::steady_clock::now() + o_.sync_interval;
  while (true) {
    {
      MutexLock lock(sync_mu_);
      if (stop_) break;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        next_scan - std::chrono::steady_clock::now());
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd, POLLIN, 0}};
    const int n =
        ::poll(fds, inotify_fd >= 0 ? 2 : 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    bool scan = std::chrono::steady_clock::now() >= next_scan;
    if (n > 0 && inotify_fd >= 0 && (fds[1].revents & POLLIN) != 0) {
      char buf[4096];
      bool self_gone = false;
      ssize_t got;
      while ((got = ::read(inotify_fd, buf, sizeof(buf))) > 0) {
        for (ssize_t off = 0; off < got;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
          if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0) self_gone = true;
          off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        }
      }
      if (self_gone) {
        ::close(inotify_fd);
        inotify_fd = -1;
      }
      scan = true;
    }
    if (!scan) continue;
    if (absl::Status s = Sync(); !s.ok()) LogWarning(s.ToString());
    watch();
    next_scan = std::chrono::steady_clock::now() + o_.sync_interval;
  }
  if (inotify_fd >= 0) ::close(inotify_fd);
}

absl::StatusOr<VoiceEntry> VoiceRegistry::Lookup(const std::string& id, bool load) {
  if (auto s = ValidateVoiceId(id); !s.ok()) {
    return absl::NotFoundError(absl::StrCat("voice '", id.substr(0, 80), "' is not registered"));
  }
  // The repository decides: one stat tells whether the voice still exists and
  // is the version this replica holds.
  auto file = Locate(id);
  {
    MutexLock lock(mu_);
    auto it = voices_.find(id);
    if (!file.ok()) {
      if (it != voices_.end()) EraseLocked(id);  // deleted elsewhere
      return file.status();
    }
    if (it != voices_.end() && it->second.sig == file->second && it->second.path == file->first) {
      Slot& slot = it->second;
      VoiceEntry e = slot.meta;
      if (!load) return e;
      e.voice = slot.resident;
      if (e.voice == nullptr) e.voice = slot.weak.lock();  // in use by a stream
      if (e.voice != nullptr) {
        TouchLocked(slot, e.voice);
        return e;
      }
    }
  }
  // Not seen yet, changed, or evicted: load it (once: a burst of streams for
  // an evicted voice waits for one load).
  MutexLock repo(repo_mu_);
  file = Locate(id);  // again: a Delete or Register may have run meanwhile
  bool reload = false;
  {
    MutexLock lock(mu_);
    auto it = voices_.find(id);
    if (!file.ok()) {
      if (it != voices_.end()) EraseLocked(id);
      return file.status();
    }
    if (it != voices_.end() && it->second.sig == file->second && it->second.path == file->first) {
      reload = true;
      Slot& slot = it->second;
      VoiceEntry e = slot.meta;
      if (!load) return e;
      e.voice = slot.resident;
      if (e.voice == nullptr) e.voice = slot.weak.lock();
      if (e.voice != nullptr) {  // loaded while this call waited
        TouchLocked(slot, e.voice);
        return e;
      }
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto loaded = LoadFileLocked(id, file->first, file->second);
  if (!loaded.ok()) {
    return absl::NotFoundError(
        absl::StrCat("voice '", id, "' is in the repository but its file cannot be loaded (",
                     loaded.status().message(), ")"));
  }
  VoiceEntry e = loaded->entry;
  MutexLock lock(mu_);
  if (reload) {
    ++reloads_;
    if (metrics_ != nullptr) {
      metrics_->reloads.Increment();
      metrics_->reload_seconds.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  InsertLocked(std::move(*loaded));
  if (!load) e.voice.reset();
  return e;
}

absl::StatusOr<VoiceEntry> VoiceRegistry::Get(const std::string& id) { return Lookup(id, true); }

absl::StatusOr<VoiceEntry> VoiceRegistry::Describe(const std::string& id) {
  return Lookup(id, false);
}

absl::StatusOr<VoiceEntry> VoiceRegistry::Register(const std::string& id,
                                                   const std::string& display_name,
                                                   model::VoiceData data) {
  if (auto s = ValidateVoiceId(id); !s.ok()) return s;
  if (static_cast<int>(display_name.size()) > o_.max_display_name_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("display_name is ", display_name.size(),
                                                   " bytes; at most ", o_.max_display_name_bytes));
  }
  VoiceRecord record{id, display_name, NowUnixMs(), data};
  const std::string bytes = EncodeVoiceFile(record);
  VoiceEntry e;
  e.id = id;
  e.display_name = display_name;
  e.create_time_unix_ms = record.create_time_unix_ms;
  e.fingerprint = VoiceFingerprint(record.data);
  e.prompt_tokens = static_cast<int>(record.data.prompt_tokens.size());
  auto voice = vocoder_.PrepareVoice(std::move(data));  // validates and uploads
  if (!voice.ok()) return voice.status();
  e.voice = *voice;
  if (before_write_) before_write_();

  MutexLock repo(repo_mu_);
  {
    MutexLock lock(mu_);
    if (static_cast<int>(voices_.size()) >= o_.max_voices && voices_.count(id) == 0) {
      return absl::ResourceExhaustedError(absl::StrCat("voice limit reached (", o_.max_voices,
                                                       ", --max-voices); delete a voice first"));
    }
  }
  const std::string final_path = absl::StrCat(o_.dir, "/", id, kVoiceFileSuffix);
  const std::string bag_path = absl::StrCat(o_.dir, "/", id, kTensorBagSuffix);
  auto exists = [&] {
    return absl::AlreadyExistsError(
        absl::StrCat("voice '", id, "' already exists in the voice repository"));
  };
  if (::access(bag_path.c_str(), F_OK) == 0) return exists();
  auto read_only = [&](int err) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the voice repository ", o_.dir, " is read-only (", ErrnoText(err),
        "): voices cannot be registered or deleted through the API; add or remove files in it "
        "instead"));
  };
  if (::mkdir(o_.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    const int err = errno;
    if (IsReadOnlyErrno(err)) return read_only(err);
    return absl::UnavailableError(
        absl::StrCat("cannot create the voice repository ", o_.dir, ": ", ErrnoText(err)));
  }
  std::string temp;
  int fd = -1;
  {
    thread_local std::mt19937_64 rng(std::random_device{}());
    for (int attempt = 0; attempt < 4 && fd < 0; ++attempt) {
      temp = absl::StrCat(o_.dir, "/", kTempPrefix, id, "-", ::getpid(), "-", rng());
      fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0 && errno != EEXIST) break;
    }
  }
  if (fd < 0) {
    const int err = errno;
    if (IsReadOnlyErrno(err)) return read_only(err);
    return absl::UnavailableError(
        absl::StrCat("cannot write to the voice repository ", o_.dir, ": ", ErrnoText(err)));
  }
  absl::Status written = WriteAll(fd, bytes);
  if (written.ok() && ::fsync(fd) != 0) written = absl::UnavailableError(ErrnoText(errno));
  ::close(fd);
  if (!written.ok()) {
    ::unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat("writing voice '", id, "' to the repository ",
                                               o_.dir, " failed: ", written.message()));
  }
  const int err = ExclusiveCreate(temp, final_path);
  ::unlink(temp.c_str());  // after link: the data stays under its final name
  if (err == EEXIST) return exists();
  if (err != 0) {
    if (IsReadOnlyErrno(err)) return read_only(err);
    return absl::UnavailableError(
        absl::StrCat("publishing voice '", id, "' in ", o_.dir, " failed: ", ErrnoText(err)));
  }
  FsyncDir(o_.dir);
  auto file = Locate(id);
  if (!file.ok()) return e;  // deleted at once by another replica: registered all the same
  Loaded loaded{e, file->second, file->first};
  bad_.erase(file->first);
  MutexLock lock(mu_);
  InsertLocked(std::move(loaded));
  return e;
}

std::vector<VoiceEntry> VoiceRegistry::List() const {
  MutexLock lock(mu_);
  std::vector<VoiceEntry> out;
  out.reserve(voices_.size());
  for (const auto& [id, slot] : voices_) out.push_back(slot.meta);
  return out;
}

absl::Status VoiceRegistry::Delete(const std::string& id) {
  if (auto s = ValidateVoiceId(id); !s.ok()) return s;
  MutexLock repo(repo_mu_);
  auto file = Locate(id);
  if (!file.ok()) {
    MutexLock lock(mu_);
    EraseLocked(id);
    return file.status();
  }
  if (::unlink(file->first.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      MutexLock lock(mu_);
      EraseLocked(id);
      return absl::NotFoundError(absl::StrCat("voice '", id, "' is not registered"));
    }
    if (IsReadOnlyErrno(err)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the voice repository ", o_.dir, " is read-only (", ErrnoText(err),
                       "): voices cannot be deleted through the API; remove the file instead"));
    }
    return absl::UnavailableError(
        absl::StrCat("deleting voice '", id, "' from ", o_.dir, " failed: ", ErrnoText(err)));
  }
  FsyncDir(o_.dir);
  bad_.erase(file->first);
  MutexLock lock(mu_);
  EraseLocked(id);
  return absl::OkStatus();
}

size_t VoiceRegistry::size() const {
  MutexLock lock(mu_);
  return voices_.size();
}

size_t VoiceRegistry::resident() const {
  MutexLock lock(mu_);
  return lru_.size();
}

int64_t VoiceRegistry::resident_bytes() const {
  MutexLock lock(mu_);
  return resident_bytes_;
}

int64_t VoiceRegistry::evictions() const {
  MutexLock lock(mu_);
  return evictions_;
}

int64_t VoiceRegistry::reloads() const {
  MutexLock lock(mu_);
  return reloads_;
}

int64_t VoiceRegistry::load_failures() const {
  MutexLock lock(mu_);
  return load_failures_;
}

}  // namespace vocoder::server

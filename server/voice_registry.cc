#include "server/voice_registry.h"

#include <dirent.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/model_runner.h"

namespace vocoder::server {

absl::Status ValidateVoiceId(const std::string& id) {
  const bool ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("voice_id '", id, "' must be 1-64 characters of [A-Za-z0-9._-]"));
}

absl::Status VoiceRegistry::LoadDirectory(const std::string& dir) {
  // POSIX, not std::filesystem: see cmake/Torch.cmake on libtorch's copy.
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::OkStatus();
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 3 && name.substr(name.size() - 3) == ".pt") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    auto data = model::ReadVoiceFile(dir + "/" + name);
    if (!data.ok()) return data.status();
    auto entry = Register(name.substr(0, name.size() - 3), "", std::move(*data));
    if (!entry.ok()) {
      return absl::Status(entry.status().code(), absl::StrCat("voice file ", dir, "/", name, ": ",
                                                              entry.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<VoiceEntry> VoiceRegistry::Register(const std::string& id,
                                                   const std::string& display_name,
                                                   model::VoiceData data) {
  if (auto s = ValidateVoiceId(id); !s.ok()) return s;
  {
    std::lock_guard lock(mu_);
    if (voices_.count(id) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("voice '", id, "' already exists"));
    }
    if (static_cast<int>(voices_.size()) >= max_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("voice limit reached (", max_, ", --max-voices); delete a voice first"));
    }
  }
  VoiceEntry e;
  e.id = id;
  e.display_name = display_name;
  e.fingerprint = VoiceFingerprint(data);
  e.create_time_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  auto voice = vocoder_.PrepareVoice(std::move(data));  // validates
  if (!voice.ok()) return voice.status();
  e.voice = *voice;
  std::lock_guard lock(mu_);
  auto [it, inserted] = voices_.emplace(id, e);
  if (!inserted) return absl::AlreadyExistsError(absl::StrCat("voice '", id, "' already exists"));
  return e;
}

absl::StatusOr<VoiceEntry> VoiceRegistry::Get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = voices_.find(id);
  if (it == voices_.end()) {
    return absl::NotFoundError(absl::StrCat("voice '", id, "' is not registered"));
  }
  return it->second;
}

std::vector<VoiceEntry> VoiceRegistry::List() const {
  std::lock_guard lock(mu_);
  std::vector<VoiceEntry> out;
  for (const auto& [id, e] : voices_) out.push_back(e);
  return out;
}

absl::Status VoiceRegistry::Delete(const std::string& id) {
  std::lock_guard lock(mu_);
  if (voices_.erase(id) == 0) {
    return absl::NotFoundError(absl::StrCat("voice '", id, "' is not registered"));
  }
  return absl::OkStatus();
}

size_t VoiceRegistry::size() const {
  std::lock_guard lock(mu_);
  return voices_.size();
}

}  // namespace vocoder::server

#include "server/voice_file.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "batcher/job.h"

namespace vocoder::server {
namespace {

constexpr char kMagic[8] = {'V', 'O', 'C', 'V', 'O', 'I', 'C', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = sizeof(kMagic) + 4 + 8;
constexpr size_t kChecksumBytes = 16;

template <typename T>
void Put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the build targets little-endian hosts
  out.append(b, sizeof(T));
}

template <typename T>
void PutArray(std::string& out, const std::vector<T>& v) {
  Put<uint32_t>(out, static_cast<uint32_t>(v.size()));
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

void PutString(std::string& out, const std::string& s) {
  Put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

// Reads from a bounded view; every read checks what is left.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T& v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(&v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  template <typename T>
  bool GetArray(std::vector<T>& v) {
    uint32_t n = 0;
    if (!Get(n) || in_.size() / sizeof(T) < n) return false;
    v.resize(n);
    std::memcpy(v.data(), in_.data(), n * sizeof(T));
    in_.remove_prefix(n * sizeof(T));
    return true;
  }
  bool GetString(std::string& s) {
    uint32_t n = 0;
    if (!Get(n) || in_.size() < n) return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool empty() const { return in_.empty(); }

 private:
  std::string_view in_;
};

std::string Checksum(std::string_view bytes) {
  const batcher::Fingerprint fp = batcher::FingerprintBytes(bytes.data(), bytes.size());
  std::string out;
  Put(out, fp.hi);
  Put(out, fp.lo);
  return out;
}

}  // namespace

std::string EncodeVoiceFile(const VoiceRecord& r) {
  std::string payload;
  PutString(payload, r.id);
  PutString(payload, r.display_name);
  Put<int64_t>(payload, r.create_time_unix_ms);
  PutArray(payload, r.data.prompt_tokens);
  PutArray(payload, r.data.prompt_feat);
  PutArray(payload, r.data.embedding);
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, kVersion);
  Put<uint64_t>(out, payload.size());
  out += payload;
  out += Checksum(out);
  return out;
}

absl::StatusOr<VoiceRecord> DecodeVoiceFile(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes + kChecksumBytes ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("not a voice file (bad magic or too short)");
  }
  Reader header(bytes.substr(sizeof(kMagic), 12));
  uint32_t version = 0;
  uint64_t payload_bytes = 0;
  header.Get(version);
  header.Get(payload_bytes);
  if (version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("voice file version ", version, "; this vocoderd reads version ", kVersion));
  }
  if (payload_bytes != bytes.size() - kHeaderBytes - kChecksumBytes) {
    return absl::DataLossError(absl::StrCat("voice file is ", bytes.size(),
                                            " bytes but its header says a payload of ",
                                            payload_bytes, " (torn or truncated write?)"));
  }
  const std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  if (Checksum(body) != bytes.substr(body.size())) {
    return absl::DataLossError("voice file checksum mismatch (torn or corrupt)");
  }
  Reader in(bytes.substr(kHeaderBytes, payload_bytes));
  VoiceRecord r;
  if (!in.GetString(r.id) || !in.GetString(r.display_name) || !in.Get(r.create_time_unix_ms) ||
      !in.GetArray(r.data.prompt_tokens) || !in.GetArray(r.data.prompt_feat) ||
      !in.GetArray(r.data.embedding) || !in.empty()) {
    return absl::DataLossError("voice file payload is malformed");
  }
  return r;
}

}  // namespace vocoder::server

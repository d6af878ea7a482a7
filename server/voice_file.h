// The voice repository's file format for registered voices, `<id>.voice`:
// what RegisterVoice writes and every replica reads. Torch-free (the export
// tool's `<id>.pt` tensor bags are read by model::ReadVoiceFile).
//
// Layout (little-endian):
//   "VOCVOICE"            8 bytes, magic
//   u32 version           1
//   u64 payload_bytes
//   payload               u32 id length, id; u32 name length, display name;
//                         i64 create time (Unix ms); u32 P, P x i64 prompt
//                         tokens; u32 F, F x f32 prompt mel (time-major);
//                         u32 E, E x f32 embedding
//   16 bytes              content checksum (batcher::FingerprintBytes) of
//                         everything before it
// A file that is short, long, or whose checksum does not match is DataLoss:
// a torn or corrupt file is never loaded.
//
// Thread-safety: plain functions, thread-safe.
#ifndef VOCODER_SERVER_VOICE_FILE_H_
#define VOCODER_SERVER_VOICE_FILE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/vocoder.h"

namespace vocoder::server {

inline constexpr char kVoiceFileSuffix[] = ".voice";

struct VoiceRecord {
  std::string id;
  std::string display_name;
  int64_t create_time_unix_ms = 0;
  model::VoiceData data;
};

std::string EncodeVoiceFile(const VoiceRecord& record);

// DataLoss (truncated, trailing bytes, bad magic or checksum) or
// InvalidArgument (unknown version). Never reads past `bytes`.
absl::StatusOr<VoiceRecord> DecodeVoiceFile(std::string_view bytes);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_VOICE_FILE_H_

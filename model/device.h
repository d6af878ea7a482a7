// Device names as the server's --device flag spells them: "cpu" or "cuda:N".
// Plain value types; no torch here, so the server and tests can parse devices
// without torch headers.
#ifndef VOCODER_MODEL_DEVICE_H_
#define VOCODER_MODEL_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vocoder::model {

struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // CUDA ordinal; 0 for cpu

  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string ToString() const;
  friend bool operator==(const Device&, const Device&) = default;
};

// "cpu" or "cuda:N" (N >= 0). InvalidArgument naming the text otherwise.
absl::StatusOr<Device> ParseDevice(absl::string_view text);

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_DEVICE_H_

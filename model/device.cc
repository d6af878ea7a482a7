#include "model/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace vocoder::model {

std::string Device::ToString() const {
  return is_cuda() ? absl::StrCat("cuda:", index) : std::string("cpu");
}

absl::StatusOr<Device> ParseDevice(absl::string_view text) {
  if (text == "cpu") return Device{};
  constexpr absl::string_view kCuda = "cuda:";
  int index = -1;
  if (text.substr(0, kCuda.size()) == kCuda &&
      absl::SimpleAtoi(text.substr(kCuda.size()), &index) && index >= 0) {
    return Device{Device::Kind::kCuda, index};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device must be 'cpu' or 'cuda:N' with N >= 0; was '", text, "'"));
}

}  // namespace vocoder::model

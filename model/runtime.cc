#include "model/runtime.h"

#include <ATen/Context.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/headeronly/version.h>

#include <optional>

#include "absl/strings/str_cat.h"

namespace vocoder::model {

RuntimeInfo GetRuntimeInfo() {
  RuntimeInfo info;
  info.torch_version = TORCH_VERSION;
#ifdef VOCODER_CUDA_BUILD
  info.cuda_build = VOCODER_CUDA_BUILD;
#endif
  info.cuda_available = at::hasCUDA();
  info.cuda_device_count = info.cuda_available ? static_cast<int>(c10::cuda::device_count()) : 0;
  return info;
}

absl::Status CheckDevice(const Device& device) {
  if (!device.is_cuda()) return absl::OkStatus();
  const RuntimeInfo info = GetRuntimeInfo();
  if (!info.cuda_available || info.cuda_device_count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device.ToString(), " requested but CUDA is not available (torch ",
                     info.torch_version, ", CUDA build '", info.cuda_build,
                     "', no usable GPU or driver); use --device cpu"));
  }
  if (device.index >= info.cuda_device_count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device.ToString(), " requested but only ", info.cuda_device_count,
                     " CUDA device(s) are visible"));
  }
  return absl::OkStatus();
}

namespace {

// The caching allocator's byte counters for `device`; none on cpu or without CUDA.
std::optional<c10::CachingAllocator::Stat> AllocatedBytes(const Device& device) {
  if (!device.is_cuda() || !CheckDevice(device).ok()) return std::nullopt;
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device.index));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}

}  // namespace

int64_t CudaMemoryAllocated(const Device& device) {
  const auto bytes = AllocatedBytes(device);
  return bytes ? bytes->current : 0;
}

int64_t CudaPeakMemory(const Device& device) {
  const auto bytes = AllocatedBytes(device);
  return bytes ? bytes->peak : 0;
}

void ResetCudaPeakMemory(const Device& device) {
  if (!device.is_cuda() || !CheckDevice(device).ok()) return;
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device.index));
}

}  // namespace vocoder::model

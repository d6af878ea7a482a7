// What the linked LibTorch can do on this machine, and a check that a device
// can be used before a model is loaded onto it.
//
// Thread-safety: all functions are thread-safe. The implementation is one of
// the few translation units that include torch headers (runtime.cc).
#ifndef VOCODER_MODEL_RUNTIME_H_
#define VOCODER_MODEL_RUNTIME_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "model/device.h"

namespace vocoder::model {

struct RuntimeInfo {
  std::string torch_version;  // e.g. "2.11.0"
  std::string cuda_build;     // CUDA version torch was built with; "" for CPU builds
  bool cuda_available = false;
  int cuda_device_count = 0;
};

RuntimeInfo GetRuntimeInfo();

// OK when `device` exists here. FailedPrecondition with a message that says
// what is missing (no CUDA, ordinal out of range) otherwise.
absl::Status CheckDevice(const Device& device);

// Bytes held by the CUDA caching allocator on `device`; 0 for cpu or when
// CUDA is not available.
int64_t CudaMemoryAllocated(const Device& device);

// Peak bytes held by the caching allocator since the last reset; 0 on cpu.
int64_t CudaPeakMemory(const Device& device);
void ResetCudaPeakMemory(const Device& device);

}  // namespace vocoder::model

#endif  // VOCODER_MODEL_RUNTIME_H_

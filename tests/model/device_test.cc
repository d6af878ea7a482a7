#include "model/device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/runtime.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::model {
namespace {

using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

TEST(DeviceTest, ParsesCpuAndCuda) {
  EXPECT_EQ(*ParseDevice("cpu"), Device{});
  auto cuda = ParseDevice("cuda:3");
  ASSERT_TRUE(cuda.ok());
  EXPECT_TRUE(cuda->is_cuda());
  EXPECT_EQ(cuda->index, 3);
  EXPECT_EQ(cuda->ToString(), "cuda:3");
}

TEST(DeviceTest, RejectsMalformedNames) {
  for (const char* bad : {"", "gpu", "cuda", "cuda:", "cuda:-1", "cuda:x", "CPU"}) {
    EXPECT_THAT(ParseDevice(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'cpu' or 'cuda:N'")))
        << bad;
  }
}

// Links and runs the real LibTorch: reports its version, and refuses a CUDA
// device that this machine does not have with an actionable message.
TEST(RuntimeTest, ReportsLinkedTorchAndChecksDevices) {
  const RuntimeInfo info = GetRuntimeInfo();
  EXPECT_EQ(info.torch_version, "2.11.0");
  EXPECT_TRUE(CheckDevice(Device{}).ok());
  EXPECT_EQ(CudaMemoryAllocated(Device{}), 0);
  const Device beyond{Device::Kind::kCuda, info.cuda_device_count};
  EXPECT_THAT(CheckDevice(beyond),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(beyond.ToString())));
  if (info.cuda_available) {
    EXPECT_TRUE(CheckDevice(Device{Device::Kind::kCuda, 0}).ok());
    EXPECT_GE(CudaMemoryAllocated(Device{Device::Kind::kCuda, 0}), 0);
  } else {
    EXPECT_THAT(CheckDevice(Device{Device::Kind::kCuda, 0}),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("use --device cpu")));
  }
}

}  // namespace
}  // namespace vocoder::model

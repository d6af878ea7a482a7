#include "server/status.h"

#include <gtest/gtest.h>

namespace vocoder::server {
namespace {

struct Row {
  absl::Status in;
  grpc::StatusCode code;
};

TEST(StatusTest, MapsEveryCodeTheServerUsesWithItsMessage) {
  const Row rows[] = {
      {absl::InvalidArgumentError("token 7000 out of range"), grpc::INVALID_ARGUMENT},
      {absl::NotFoundError("voice 'x' not found"), grpc::NOT_FOUND},
      {absl::AlreadyExistsError("voice 'x' exists"), grpc::ALREADY_EXISTS},
      {absl::ResourceExhaustedError("queue full"), grpc::RESOURCE_EXHAUSTED},
      {absl::DeadlineExceededError("deadline passed"), grpc::DEADLINE_EXCEEDED},
      {absl::CancelledError("client went away"), grpc::CANCELLED},
      {absl::UnavailableError("draining"), grpc::UNAVAILABLE},
      {absl::InternalError("CUDA error"), grpc::INTERNAL},
      {absl::FailedPreconditionError("model not loaded"), grpc::FAILED_PRECONDITION},
  };
  for (const Row& r : rows) {
    const grpc::Status g = ToGrpcStatus(r.in);
    EXPECT_EQ(g.error_code(), r.code) << r.in;
    EXPECT_EQ(g.error_message(), r.in.message());
    EXPECT_EQ(FromGrpcStatus(g), r.in);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace vocoder::server

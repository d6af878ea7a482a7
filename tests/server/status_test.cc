#include "server/status.h"

#include <gtest/gtest.h>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

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

TEST(StatusTest, RetryableCodesCarryRetryInfo) {
  const grpc::Status full = ToGrpcStatus(absl::ResourceExhaustedError("queue full"));
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(full.error_details()));
  EXPECT_EQ(details.code(), grpc::RESOURCE_EXHAUSTED);
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::RetryInfo retry;
  ASSERT_TRUE(details.details(0).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().nanos(), 100000000);

  const grpc::Status draining = ToGrpcStatus(absl::UnavailableError("draining"));
  ASSERT_TRUE(details.ParseFromString(draining.error_details()));
  ASSERT_TRUE(details.details(0).UnpackTo(&retry));
  EXPECT_EQ(retry.retry_delay().seconds(), 1);

  EXPECT_TRUE(ToGrpcStatus(absl::InvalidArgumentError("bad token")).error_details().empty());
  // A chunk that does not fit in device memory alone (the batcher's verdict
  // after splitting): no retry hint, retrying cannot succeed.
  EXPECT_TRUE(ToGrpcStatus(absl::FailedPreconditionError("does not fit in device memory"))
                  .error_details()
                  .empty());
}

}  // namespace
}  // namespace vocoder::server

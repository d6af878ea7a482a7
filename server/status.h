// The one place where absl::Status becomes a gRPC status: the server's edge.
// Everything inside vocoderd speaks absl::Status.
//
// Thread-safety: pure functions.
#ifndef VOCODER_SERVER_STATUS_H_
#define VOCODER_SERVER_STATUS_H_

#include <grpcpp/support/status.h>

#include <chrono>
#include <optional>

#include "absl/status/status.h"

namespace vocoder::server {

// Same code (the two enums share numbering), same message. OK stays OK.
// Retryable codes (RESOURCE_EXHAUSTED, UNAVAILABLE) also carry a
// google.rpc.Status with a RetryInfo in the binary error details.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The retry delay sent with `code`, if it is retryable.
std::optional<std::chrono::milliseconds> RetryDelay(absl::StatusCode code);

// The inverse, for clients and tests that hold a grpc::Status.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_STATUS_H_

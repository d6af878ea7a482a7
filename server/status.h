// The one place where absl::Status becomes a gRPC status: the server's edge.
// Everything inside vocoderd speaks absl::Status.
//
// Thread-safety: pure functions.
#ifndef VOCODER_SERVER_STATUS_H_
#define VOCODER_SERVER_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace vocoder::server {

// Same code (the two enums share numbering), same message. OK stays OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse, for clients and tests that hold a grpc::Status.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_STATUS_H_

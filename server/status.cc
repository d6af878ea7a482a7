#include "server/status.h"

#include <string>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace vocoder::server {
namespace {

// absl::StatusCode and grpc::StatusCode both follow google.rpc.Code; the
// static_asserts pin that so the casts below stay exact.
static_assert(static_cast<int>(absl::StatusCode::kCancelled) == grpc::StatusCode::CANCELLED);
static_assert(static_cast<int>(absl::StatusCode::kResourceExhausted) ==
              grpc::StatusCode::RESOURCE_EXHAUSTED);
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
              grpc::StatusCode::UNAUTHENTICATED);
static_assert(static_cast<int>(absl::StatusCode::kDataLoss) == grpc::StatusCode::DATA_LOSS);

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  if (code < 0 || code > grpc::StatusCode::UNAUTHENTICATED) {
    return grpc::Status(grpc::StatusCode::UNKNOWN, std::string(status.message()));
  }
  const auto grpc_code = static_cast<grpc::StatusCode>(code);
  const auto delay = RetryDelay(status.code());
  if (!delay) return grpc::Status(grpc_code, std::string(status.message()));
  // Retryable: tell the client when, as google.rpc.RetryInfo in the details.
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(delay->count() / 1000);
  retry.mutable_retry_delay()->set_nanos(static_cast<int32_t>(delay->count() % 1000) * 1000000);
  google::rpc::Status details;
  details.set_code(code);
  details.set_message(std::string(status.message()));
  details.add_details()->PackFrom(retry);
  return grpc::Status(grpc_code, std::string(status.message()), details.SerializeAsString());
}

std::optional<std::chrono::milliseconds> RetryDelay(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kResourceExhausted:
      return std::chrono::milliseconds(100);  // queue or stream cap: back off briefly
    case absl::StatusCode::kUnavailable:
      return std::chrono::milliseconds(1000);  // draining or loading: try another replica
    default:
      return std::nullopt;
  }
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace vocoder::server

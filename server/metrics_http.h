// The /metrics endpoint: prometheus-cpp's Exposer (CivetWeb) serving the
// registry in the Prometheus text format on its own port and worker threads.
//
// Hostile clients. CivetWeb serves each connection on one of `threads`
// workers, so a slow client (a byte a second), an idle one or one that never
// reads occupies one worker, not the endpoint: scrapes keep being answered
// while fewer than `threads` such connections are open. Each request has a
// total deadline (`request_timeout`: reading the request and writing the
// reply), after which CivetWeb closes the connection, and stopping does not
// wait for clients (CivetWeb's workers poll its stop flag), so SIGTERM exits
// promptly whatever the clients do.
//
// Routing is exact: GET /metrics (query allowed) is a scrape; HEAD /metrics
// answers 200 with the headers only; any other method on /metrics gets 405
// with Allow: GET, HEAD; every other path (/metricsX, /metrics/../x) 404.
//
// Start failures carry CivetWeb's reason (its log_message callback), e.g.
// "address in use" or "invalid port spec", not prometheus-cpp's generic
// "null context when constructing CivetServer".
//
// Thread-safety: Start and the destructor from one thread; scrapes run on
// CivetWeb's workers (before_scrape may run on several at once).
#ifndef VOCODER_SERVER_METRICS_HTTP_H_
#define VOCODER_SERVER_METRICS_HTTP_H_

#include <prometheus/collectable.h>
#include <prometheus/registry.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace vocoder::server {

struct MetricsHttpOptions {
  // Worker threads: concurrent connections served; one more than this many
  // stuck clients starts to delay scrapes (each by at most request_timeout).
  int threads = 8;
  // Total time a connection gets to send its request and take the reply.
  std::chrono::milliseconds request_timeout{5000};
};

class MetricsHttpServer {
 public:
  // Binds `listen` ("HOST:PORT" with an IPv4 address or a host name; port 0
  // picks a free one) and starts serving. `before_scrape` (optional) runs
  // before each scrape, to refresh gauges that are cheaper to read than to
  // track; it must be thread-safe. Errors: InvalidArgument (malformed or
  // IPv6 address), Unavailable (cannot bind, with CivetWeb's reason).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
      std::function<void()> before_scrape = nullptr, const MetricsHttpOptions& options = {});
  // Stops serving; returns without waiting for clients to finish.
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;

  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_METRICS_HTTP_H_

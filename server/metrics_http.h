// A minimal HTTP/1.1 endpoint serving GET /metrics (Prometheus text format)
// from a prometheus-cpp registry, on its own port and thread.
//
// Why not prometheus-cpp's Exposer: inside vocoderd, Debian's CivetWeb-based
// Exposer (prometheus-cpp 1.0.1) failed to start ("null context when
// constructing CivetServer") right after binding, while the same call works in
// a bare program; a scrape endpoint needs one request type, so vocoderd serves
// it itself (and can bind port 0).
//
// Thread-safety: Start/Stop from one thread; serving runs on its own thread.
#ifndef VOCODER_SERVER_METRICS_HTTP_H_
#define VOCODER_SERVER_METRICS_HTTP_H_

#include <prometheus/registry.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace vocoder::server {

class MetricsHttpServer {
 public:
  // Binds `listen` ("HOST:PORT", port 0 picks a free one) and starts serving.
  // `before_scrape` (optional) runs on the serving thread before each
  // scrape, to refresh gauges that are cheaper to read than to track.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
      std::function<void()> before_scrape = nullptr);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  void Serve();

  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> before_scrape_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_METRICS_HTTP_H_

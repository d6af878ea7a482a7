#include "server/metrics_http.h"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <prometheus/exposer.h>
#include <sys/socket.h>

#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/thread_stack.h"

namespace vocoder::server {
namespace {

// The registry, preceded by the before-scrape hook: what the Exposer collects.
class HookedCollectable final : public prometheus::Collectable {
 public:
  HookedCollectable(std::shared_ptr<prometheus::Registry> registry, std::function<void()> hook)
      : registry_(std::move(registry)), hook_(std::move(hook)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    if (hook_) hook_();
    return registry_->Collect();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> hook_;
};

// CivetWeb's log lines while Start runs on this thread (CivetWeb reports why
// mg_start failed only through its log callback). Worker-thread messages
// (client errors and timeouts) are dropped: a hostile client must not be
// able to flood vocoderd's log.
thread_local std::vector<std::string>* start_log = nullptr;

int OnLogMessage(const mg_connection*, const char* message) {
  if (start_log != nullptr) start_log->emplace_back(message);
  return 1;  // handled: CivetWeb prints nothing itself
}

int Reply(mg_connection* conn, int code, const char* reason, const std::string& extra_headers,
          const std::string& body) {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: "
            "%zu\r\nConnection: close\r\n\r\n",
            code, reason, extra_headers.c_str(), body.size());
  mg_write(conn, body.data(), body.size());
  return code;
}

// Exact routing before the Exposer's prefix-matching handler sees a request.
int OnBeginRequest(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const char* path = info->local_uri_raw != nullptr ? info->local_uri_raw : "";
  if (std::strcmp(path, "/metrics") != 0) {
    return Reply(conn, 404, "Not Found", "", "not found; metrics are at /metrics\n");
  }
  const char* method = info->request_method != nullptr ? info->request_method : "";
  if (std::strcmp(method, "GET") == 0) return 0;  // the Exposer serves the scrape
  if (std::strcmp(method, "HEAD") == 0) {
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Connection: close\r\n\r\n");
    return 200;
  }
  return Reply(conn, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
               "only GET and HEAD are allowed on /metrics\n");
}

// "HOST:PORT" -> CivetWeb's "IPV4:PORT" (Debian's CivetWeb has no IPv6).
absl::StatusOr<std::string> CivetAddress(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen '", listen, "' is not HOST:PORT"));
  }
  const std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (!host.empty() && (host.front() == '[' || host.find(':') != std::string::npos)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen '", listen,
                     "': IPv6 is not supported by the metrics endpoint (CivetWeb is built "
                     "without it); use an IPv4 address such as 0.0.0.0:",
                     port));
  }
  if (host.empty()) return absl::StrCat("0.0.0.0:", port);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: cannot resolve '", host, "' to an IPv4 address"));
  }
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, ip, sizeof(ip));
  freeaddrinfo(res);
  return absl::StrCat(ip, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
    std::function<void()> before_scrape, const MetricsHttpOptions& options) {
  auto address = CivetAddress(listen);
  if (!address.ok()) return address.status();
  if (options.threads <= 0 || options.request_timeout.count() <= 0) {
    return absl::InvalidArgumentError("metrics endpoint: threads and request_timeout must be > 0");
  }
  // CivetWeb asks for 100 KiB stacks; the interposer makes room for the
  // static TLS of torch and CUDA (thread_stack.h) or no worker could start.
  (void)StackReserveForStaticTls();
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->collectable_ =
      std::make_shared<HookedCollectable>(std::move(registry), std::move(before_scrape));
  CivetCallbacks callbacks;  // its constructor zeroes every callback
  callbacks.begin_request = OnBeginRequest;
  callbacks.log_message = OnLogMessage;
  const std::string timeout = absl::StrCat(options.request_timeout.count());
  std::vector<std::string> civet_options = {
      "listening_ports", *address, "num_threads", absl::StrCat(options.threads),
      // Total per request: CivetWeb measures reading the request against it
      // from the request's start, and bounds each write by it.
      "request_timeout_ms", timeout,
      // One request per connection: nobody holds a worker between scrapes.
      "enable_keep_alive", "no"};
  std::vector<std::string> log;
  start_log = &log;
  try {
    s->exposer_ = std::make_unique<prometheus::Exposer>(civet_options, &callbacks);
  } catch (const std::exception& e) {
    start_log = nullptr;
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": ",
                     log.empty() ? std::string(e.what()) : absl::StrJoin(log, "; ")));
  }
  start_log = nullptr;
  s->exposer_->RegisterCollectable(s->collectable_);
  const std::vector<int> ports = s->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": no port"));
  }
  s->port_ = ports.front();
  return s;
}

MetricsHttpServer::~MetricsHttpServer() = default;

}  // namespace vocoder::server

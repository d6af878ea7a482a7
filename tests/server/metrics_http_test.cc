// The /metrics endpoint against well-behaved and hostile HTTP clients: exact
// routing, scrapes that keep being answered while slow, idle and non-reading
// clients hold connections, a total per-request deadline, prompt stop, and
// start failures that say why.
#include "server/metrics_http.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include "tests/testing/raw_http.h"
#include "tests/testing/status_matchers.h"

namespace vocoder::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using vocoder::testing::ConnectLocal;
using vocoder::testing::Get;
using vocoder::testing::Request;
using vocoder::testing::SendAll;
using vocoder::testing::StatusIs;

class MetricsHttpTest : public ::testing::Test {
 protected:
  // `series`: extra counters, to make a reply larger than socket buffers.
  void Start(MetricsHttpOptions options, int series = 0) {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter().Name("vocoder_test_total").Help("t").Register(*registry_).Add({});
    auto& bulk =
        prometheus::BuildCounter().Name("vocoder_bulk_total").Help("b").Register(*registry_);
    for (int i = 0; i < series; ++i) bulk.Add({{"series", std::to_string(i)}}).Increment(i);
    auto s = MetricsHttpServer::Start(
        "127.0.0.1:0", registry_, [this] { scrapes_.fetch_add(1); }, options);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    port_ = server_->port();
    ASSERT_GT(port_, 0);
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> server_;
  int port_ = 0;
  std::atomic<int> scrapes_{0};
};

TEST_F(MetricsHttpTest, RoutesOnlyMetricsAndAnswersHeadAndOtherMethods) {
  Start({});
  auto ok = Get(port_, "/metrics");
  EXPECT_EQ(ok.status, 200);
  EXPECT_THAT(ok.body, HasSubstr("vocoder_test_total 0"));
  EXPECT_THAT(ok.head, HasSubstr("text/plain"));
  EXPECT_EQ(Get(port_, "/metrics?name=x").status, 200);
  for (const char* path : {"/metricsX", "/metrics/../x", "/metrics/", "/metrics/x", "/", "/x"}) {
    auto r = Get(port_, path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_THAT(r.body, Not(HasSubstr("vocoder_test_total"))) << path;
  }
  auto head =
      Request(port_, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", std::chrono::seconds(5));
  EXPECT_EQ(head.status, 200);
  EXPECT_THAT(head.head, HasSubstr("text/plain"));
  EXPECT_EQ(head.body, "");
  auto post =
      Request(port_, "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status, 405);
  EXPECT_THAT(post.head, HasSubstr("Allow: GET, HEAD"));
  EXPECT_EQ(Request(port_, "DELETE /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").status, 405);
  EXPECT_EQ(scrapes_.load(), 2) << "only the two GET scrapes collect";
}

// Stuck clients connect first, then scrapes come: each is answered while the
// stuck ones still hold their connections, and stopping does not wait for
// them. request_timeout is long here, so concurrency (not the deadline) is
// what keeps scrapes going.
TEST_F(MetricsHttpTest, ScrapesSucceedWhileSlowIdleAndNonReadingClientsHoldConnections) {
  MetricsHttpOptions o;
  o.request_timeout = seconds(60);
  Start(o, /*series=*/20000);  // a reply of about 1 MB
  std::atomic<bool> stop{false};
  // A client sending its request a byte a second.
  std::thread slow([&] {
    const int fd = ConnectLocal(port_);
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
      if (!SendAll(fd, req.substr(i, 1))) break;
      for (int t = 0; t < 10 && !stop.load(); ++t) std::this_thread::sleep_for(milliseconds(100));
    }
    close(fd);
  });
  std::vector<int> stuck;
  for (int i = 0; i < 3; ++i) stuck.push_back(ConnectLocal(port_));  // idle: send nothing
  for (int i = 0; i < 2; ++i) {  // send a scrape request, never read the reply
    const int fd = ConnectLocal(port_, /*rcvbuf=*/4096);
    SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stuck.push_back(fd);
  }
  for (int fd : stuck) ASSERT_GE(fd, 0);
  for (int i = 0; i < 3; ++i) {
    auto r = Get(port_, "/metrics", seconds(10));
    ASSERT_EQ(r.status, 200) << "scrape " << i << " was held up by stuck clients";
    EXPECT_THAT(r.body, HasSubstr("vocoder_bulk_total{series=\"19999\"} 19999"));
  }
  // Stopping with every stuck client still connected returns promptly.
  auto stopped = std::async(std::launch::async, [&] { server_.reset(); });
  const bool prompt = stopped.wait_for(seconds(15)) == std::future_status::ready;
  EXPECT_TRUE(prompt) << "stopping the endpoint waited for stuck clients";
  stop.store(true);
  for (int fd : stuck) close(fd);
  slow.join();
  stopped.wait();
}

// A client that keeps sending a byte every 100 ms never trips a per-read
// timeout; the total deadline closes it anyway.
TEST_F(MetricsHttpTest, ARequestHasATotalDeadline) {
  MetricsHttpOptions o;
  o.request_timeout = seconds(1);
  Start(o);
  const int fd = ConnectLocal(port_);
  ASSERT_GE(fd, 0);
  const std::string req = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(200, 'a');
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (size_t i = 0; i < req.size() && !closed; ++i) {  // 20 s if never closed
    if (!SendAll(fd, req.substr(i, 1))) break;
    vocoder::testing::ReadAll(fd, milliseconds(100), &closed);
  }
  const double held_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(fd);
  EXPECT_TRUE(closed) << "the dribbling client was never disconnected";
  EXPECT_LT(held_s, 15.0);
  EXPECT_EQ(Get(port_, "/metrics").status, 200);
}

TEST(MetricsHttpStartTest, FailuresSayWhy) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsHttpServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  EXPECT_THAT(MetricsHttpServer::Start(taken, registry),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("in use")));
  EXPECT_THAT(MetricsHttpServer::Start("[::1]:0", registry),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("IPv6")));
  EXPECT_THAT(MetricsHttpServer::Start("no-port", registry),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
  auto by_name = MetricsHttpServer::Start("localhost:0", registry);
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_EQ(Get((*by_name)->port(), "/metrics").status, 200);
}

}  // namespace
}  // namespace vocoder::server

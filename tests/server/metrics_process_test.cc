// The real vocoderd binary with stuck clients on its metrics port (one
// sending a byte a second, idle ones, ones that never read): scrapes are
// still answered and SIGTERM still ends the process promptly, with exit code
// 0. (Before the endpoint was CivetWeb's, one byte-a-second client held every
// scrape and kept vocoderd from exiting.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/raw_http.h"
#include "tests/testing/vocoderd_process.h"

namespace vocoder {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ConnectLocal;
using testing::Get;
using testing::SendAll;

// waitpid with a deadline; true if the child exited (status in *status).
bool WaitFor(pid_t pid, int* status, std::chrono::steady_clock::duration limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

TEST(VocoderdMetricsProcessTest, StuckMetricsClientsHoldNeitherScrapesNorShutdown) {
  const testing::VocoderdProcess proc = testing::StartVocoderd(VOCODERD_BIN_PATH, 30);
  ASSERT_GT(proc.pid, 0);
  const pid_t pid = proc.pid;
  const int mport = testing::PortAfter(proc.line, "metrics on port ");
  ASSERT_GE(mport, 0) << "vocoderd printed: " << proc.line;

  std::atomic<bool> stop{false};
  std::promise<void> slow_connected;
  std::thread slow([&] {  // a byte a second, for as long as the test runs
    const int fd = ConnectLocal(mport);
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(100, 'a');
    for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
      if (!SendAll(fd, req.substr(i, 1))) break;
      if (i == 0) slow_connected.set_value();
      // Pacing only: the client is slow, which is what it is here for.
      for (int t = 0; t < 10 && !stop.load(); ++t) std::this_thread::sleep_for(milliseconds(100));
    }
    close(fd);
  });
  // The slow client connects and sends its first byte before the others.
  ASSERT_EQ(slow_connected.get_future().wait_for(seconds(60)), std::future_status::ready);
  std::vector<int> stuck;
  for (int i = 0; i < 4; ++i) stuck.push_back(ConnectLocal(mport));  // idle
  for (int i = 0; i < 2; ++i) {                                      // never read
    const int fd = ConnectLocal(mport, /*rcvbuf=*/4096);
    SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    stuck.push_back(fd);
  }
  for (int i = 0; i < 3; ++i) {
    const auto r = Get(mport, "/metrics", seconds(5));
    EXPECT_EQ(r.status, 200) << "scrape " << i << " was held up by stuck clients";
    EXPECT_NE(r.body.find("vocoder_model_loaded"), std::string::npos);
  }
  kill(pid, SIGTERM);
  int status = 0;
  const bool exited = WaitFor(pid, &status, seconds(15));
  EXPECT_TRUE(exited) << "vocoderd still running 15 s after SIGTERM with stuck metrics clients";
  stop.store(true);
  for (int fd : stuck) close(fd);
  slow.join();
  if (!exited && !WaitFor(pid, &status, seconds(10))) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace vocoder

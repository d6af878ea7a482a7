// A raw TCP HTTP client for endpoint tests, including hostile ones: clients
// that send a byte at a time, connect and send nothing, or never read.
#ifndef VOCODER_TESTS_TESTING_RAW_HTTP_H_
#define VOCODER_TESTS_TESTING_RAW_HTTP_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace vocoder::testing {

// Connects to 127.0.0.1:port; -1 on failure. `rcvbuf` > 0 shrinks the
// receive buffer first (a client that never reads then fills quickly).
inline int ConnectLocal(int port, int rcvbuf = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Reads until the peer closes or `timeout` passes in total. `closed` says
// which one happened.
inline std::string ReadAll(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string out;
  char buf[65536];
  if (closed != nullptr) *closed = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      return out;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

struct HttpReply {
  int status = 0;  // 0: no complete reply before the timeout
  std::string head;
  std::string body;
};

// One request on a fresh connection; the server closes it after the reply.
inline HttpReply Request(int port, const std::string& request,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  HttpReply reply;
  const int fd = ConnectLocal(port);
  if (fd < 0) return reply;
  bool closed = false;
  std::string raw;
  if (SendAll(fd, request)) raw = ReadAll(fd, timeout, &closed);
  close(fd);
  const auto end = raw.find("\r\n\r\n");
  if (!closed || end == std::string::npos || raw.rfind("HTTP/1.", 0) != 0) return reply;
  reply.head = raw.substr(0, end);
  reply.body = raw.substr(end + 4);
  reply.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
  return reply;
}

inline HttpReply Get(int port, const std::string& path,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return Request(port, "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout);
}

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_RAW_HTTP_H_

// The real vocoderd binary as a child process, for tests of what only a
// process shows (signals, exit codes, stuck clients at shutdown).
#ifndef VOCODER_TESTS_TESTING_VOCODERD_PROCESS_H_
#define VOCODER_TESTS_TESTING_VOCODERD_PROCESS_H_

#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/testing/test_model.h"

namespace vocoder::testing {

struct VocoderdProcess {
  pid_t pid = -1;      // -1: pipe or fork failed
  std::string line;    // the first line it printed ("... port N ... metrics on port M")
  int stdout_fd = -1;  // kept open: the child would get SIGPIPE writing to a closed pipe
};

// Starts $VOCODERD_BIN (else `default_bin`) on free gRPC and metrics ports
// with the test model and --drain-grace-s=`drain_grace_s`, and reads the
// first line it prints, which it prints once serving.
inline VocoderdProcess StartVocoderd(const char* default_bin, int drain_grace_s) {
  const char* bin = std::getenv("VOCODERD_BIN");
  if (bin == nullptr) bin = default_bin;
  VocoderdProcess p;
  int out[2];
  if (pipe(out) != 0) return p;
  const std::string dir = "--model-dir=" + TestModelDir();
  const std::string grace = "--drain-grace-s=" + std::to_string(drain_grace_s);
  p.pid = fork();
  if (p.pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(bin, bin, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0", dir.c_str(),
          grace.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  p.stdout_fd = out[0];
  char c;
  while (p.pid > 0 && read(out[0], &c, 1) == 1 && c != '\n') p.line += c;
  return p;
}

// The number after `key` in `line`, or -1 when `key` is not there.
inline int PortAfter(const std::string& line, const std::string& key) {
  const auto at = line.find(key);
  return at == std::string::npos ? -1 : std::atoi(line.c_str() + at + key.size());
}

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_VOCODERD_PROCESS_H_

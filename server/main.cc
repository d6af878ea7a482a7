// vocoderd: the only place that builds real objects (config, model, server).
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <thread>

#include "config/config.h"
#include "model/vocoder.h"
#include "server/server.h"

namespace {

// --log-level filters vocoderd's few lifecycle messages (stderr).
int g_log_level = 1;  // 0 debug, 1 info, 2 warning, 3 error
int LevelOf(const std::string& name) {
  return name == "debug" ? 0 : name == "info" ? 1 : name == "warning" ? 2 : 3;
}
__attribute__((format(printf, 2, 3))) void Log(int level, const char* fmt, ...) {
  if (level < g_log_level) return;
  std::fputs("vocoderd: ", stderr);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = vocoder::config::ParseConfig(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "vocoderd: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->action == vocoder::config::ParseResult::Action::kExit) {
    std::fputs(parsed->output.c_str(), stdout);
    return parsed->exit_code;
  }
  const vocoder::config::Config& config = parsed->config;
  g_log_level = LevelOf(config.log_level);

  // SIGTERM/SIGINT are taken by sigwait below, never by a handler: block them
  // before any thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Log(1, "loading %s on %s", config.model_dir.c_str(), config.device.c_str());
  vocoder::model::LoadOptions load_options;
  load_options.intra_op_threads = config.intra_op_threads;
  if (config.device == "sim" || config.device.rfind("sim:", 0) == 0) {
    // Never in production: the audio is a test tone and the GPU is a sleep.
    Log(2,
        "WARNING: --device %s is the SIMULATED accelerator (docs/simulator.md): audio is a test "
        "tone, batch times come from a cost profile; /metrics labels device=\"sim\". For "
        "benchmarks and tests only.",
        config.device.c_str());
  }
  auto vocoder = vocoder::model::LoadVocoder(config.model_dir, config.device, load_options);
  if (!vocoder.ok()) {
    Log(3, "%s", vocoder.status().ToString().c_str());
    return 1;
  }
  auto server = vocoder::server::VocoderServer::Start(config, std::move(*vocoder));
  if (!server.ok()) {
    Log(3, "%s", server.status().ToString().c_str());
    return 1;
  }
  // The bound port on one line, for scripts that start us on port 0.
  std::fprintf(stdout,
               "vocoderd: serving on port %d, metrics on port %d (voices: %zu, device %s)\n",
               (*server)->port(), (*server)->metrics_port(), (*server)->voices().size(),
               config.device.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  Log(1, "%s: draining (grace %.1f s; a second signal stops at once)",
      sig == SIGTERM ? "SIGTERM" : "SIGINT", config.drain_grace_s);
  // A second SIGTERM/SIGINT ends the drain's wait at once: open calls get
  // UNAVAILABLE, queued jobs complete with an error, and the process exits.
  std::atomic<bool> drained{false};
  std::thread second([&] {
    const timespec poll{0, 100 * 1000 * 1000};
    while (!drained.load()) {
      if (sigtimedwait(&signals, nullptr, &poll) > 0) {
        Log(1, "second signal: stopping now");
        (*server)->InterruptDrain();
        return;
      }
    }
  });
  (*server)->Drain(std::chrono::milliseconds(static_cast<int64_t>(config.drain_grace_s * 1000)));
  drained.store(true);
  second.join();
  server->reset();
  Log(1, "stopped");
  return 0;
}

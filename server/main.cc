// vocoderd: the only place that builds real objects (config, model, server).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <thread>

#include "config/config.h"
#include "model/vocoder.h"
#include "server/server.h"

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

  // SIGTERM/SIGINT are taken by sigwait below, never by a handler: block them
  // before any thread starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::fprintf(stderr, "vocoderd: loading %s on %s\n", config.model_dir.c_str(),
               config.device.c_str());
  auto vocoder = vocoder::model::LoadVocoder(config.model_dir, config.device);
  if (!vocoder.ok()) {
    std::fprintf(stderr, "vocoderd: %s\n", vocoder.status().ToString().c_str());
    return 1;
  }
  auto server = vocoder::server::VocoderServer::Start(config, std::move(*vocoder));
  if (!server.ok()) {
    std::fprintf(stderr, "vocoderd: %s\n", server.status().ToString().c_str());
    return 1;
  }
  // The bound port on one line, for scripts that start us on port 0.
  std::fprintf(stdout, "vocoderd: serving on port %d (voices: %zu, device %s)\n", (*server)->port(),
               (*server)->voices().size(), config.device.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "vocoderd: %s: draining (grace %.1f s)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", config.drain_grace_s);
  (*server)->Drain(std::chrono::milliseconds(static_cast<int64_t>(config.drain_grace_s * 1000)));
  server->reset();
  std::fprintf(stderr, "vocoderd: stopped\n");
  return 0;
}

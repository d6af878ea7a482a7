#include "config/config.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace vocoder::config {
namespace {

std::string EnvName(const std::string& flag) {
  return "VOCODERD_" + absl::AsciiStrToUpper(absl::StrReplaceAll(flag, {{"-", "_"}}));
}

// CLI11 2.1's config reader takes a quoted value verbatim (no escape
// sequences), so Render writes strings the same way: escaping would add
// backslashes on every load.
std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }
std::string Quote(int v) { return absl::StrCat(v); }
std::string Quote(int64_t v) { return absl::StrCat(v); }
// The shortest text that reads back as the same double (StrCat keeps 6 digits).
std::string Quote(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// One flag: registered with CLI11 and rendered back by Render().
struct Binding {
  std::string flag;  // without dashes
  std::string group;
  std::function<std::string(const Config&)> render;
};

// Registers every flag of Config on `app` (or only lists them when app is
// null). The single place that names flags, so help, environment variables
// and Render() cannot drift apart.
std::vector<Binding> Bind(CLI::App* app, Config& c) {
  std::vector<Binding> out;
  auto add = [&](const std::string& group, const std::string& flag, auto Config::*member,
                 const std::string& help) {
    if (app != nullptr) {
      app->add_option("--" + flag, c.*member, help)
          ->envname(EnvName(flag))
          ->group(group)
          ->capture_default_str();
    }
    out.push_back({flag, group, [member](const Config& x) { return Quote(x.*member); }});
  };
  add("Network", "listen", &Config::listen, "gRPC address, HOST:PORT (port 0 picks a free one)");
  add("Network", "metrics-listen", &Config::metrics_listen,
      "Prometheus /metrics address, HOST:PORT (empty disables)");
  add("Network", "tls-cert", &Config::tls_cert, "PEM certificate; TLS when set with --tls-key");
  add("Network", "tls-key", &Config::tls_key, "PEM private key for --tls-cert");
  add("Network", "max-connection-age-s", &Config::max_connection_age_s,
      "Send GOAWAY after this many seconds so clients rebalance (0 = never)");
  add("Model", "model-dir", &Config::model_dir, "Exported model directory (manifest.json)");
  add("Model", "device", &Config::device,
      "Device: cpu or cuda:N; sim, sim:NAME or sim:PATH.json is the simulated accelerator "
      "(benchmarks and tests only, docs/simulator.md)");
  add("Model", "voices-dir", &Config::voices_dir,
      "Voice repository, shared by all replicas (default <model-dir>/voices)");
  add("Model", "voices-sync-interval-ms", &Config::voices_sync_interval_ms,
      "Rescan the voice repository this often (inotify also triggers a rescan)");
  add("Model", "voice-cache-mb", &Config::voice_cache_mb,
      "Idle voices kept on the device, by size; evicted ones reload on use (0 = no limit)");
  add("Model", "intra-op-threads", &Config::intra_op_threads,
      "Torch CPU threads per batch (0 = torch's default, one per core)");
  add("Batcher", "max-batch-size", &Config::max_batch_size,
      "Jobs per batch (the GPU sees twice as many rows: CFG)");
  add("Batcher", "max-batch-tokens", &Config::max_batch_tokens,
      "Padded tokens per batch, rows x longest (0 = no budget)");
  add("Batcher", "early-fire-fraction", &Config::early_fire_fraction,
      "Fire when a batch is this full, in (0, 1]");
  add("Batcher", "idle-grace-us", &Config::idle_grace_us,
      "Run once no job arrived for this long while the GPU is idle");
  add("Batcher", "max-wait-us", &Config::max_wait_us, "Longest wait of the oldest queued job");
  add("Batcher", "max-padding-waste", &Config::max_padding_waste,
      "Split a batch when padding would exceed this share, in [0, 1)");
  add("Batcher", "max-queue-jobs", &Config::max_queue_jobs,
      "Queued jobs before RESOURCE_EXHAUSTED");
  add("Batcher", "grouping", &Config::grouping,
      "voice: one voice per batch; mixed: voices share batches");
  add("Batcher", "scheduling", &Config::scheduling,
      "batch: whole solves; step: jobs join a running set between Euler steps (needs "
      "--grouping mixed)");
  add("Batcher", "join-amortization", &Config::join_amortization,
      "step: queued jobs join running rows once they have waited this many times the device "
      "time a separate join costs (0 = join at every step)");
  add("Limits", "max-streams", &Config::max_streams, "Concurrent streams");
  add("Limits", "max-streams-per-peer", &Config::max_streams_per_peer,
      "Concurrent streams from one client address (0 = no limit; leave 0 behind a proxy that "
      "hides client addresses)");
  add("Limits", "stream-idle-timeout-s", &Config::stream_idle_timeout_s,
      "Finish a stream that sent nothing for this long with its input open (0 = never)");
  add("Limits", "max-tokens-per-chunk", &Config::max_tokens_per_chunk, "Tokens in one chunk");
  add("Limits", "max-tokens-per-utterance", &Config::max_tokens_per_utterance,
      "Tokens in one utterance");
  add("Limits", "max-message-bytes", &Config::max_message_bytes, "Largest gRPC message");
  add("Limits", "max-voices", &Config::max_voices, "Registered voices");
  add("Limits", "max-voice-bytes", &Config::max_voice_bytes, "Largest voice upload");
  add("Lifecycle", "drain-grace-s", &Config::drain_grace_s,
      "Seconds in-flight streams get to finish on SIGTERM");
  add("Lifecycle", "log-level", &Config::log_level, "debug, info, warning or error");
  return out;
}

absl::Status Invalid(const std::string& flag, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", what));
}

}  // namespace

absl::Status CheckHostPort(const std::string& flag, const std::string& value) {
  const auto colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Invalid(flag, absl::StrCat("must be HOST:PORT; was '", value, "'"));
  }
  // A host name, an IPv4 address or a bracketed IPv6 address.
  const std::string host = value.substr(0, colon);
  const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  const std::string inner = bracketed ? host.substr(1, host.size() - 2) : host;
  const bool host_ok = !inner.empty() && std::all_of(inner.begin(), inner.end(), [&](char ch) {
    return absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ||
           ch == '_' || (bracketed && (ch == ':' || ch == '%'));
  });
  if (!host_ok) {
    return Invalid(
        flag, absl::StrCat("must be HOST:PORT with a host name or address; was '", value, "'"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return Invalid(flag, absl::StrCat("needs a port in 0..65535; was '", value, "'"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const Config& c) {
  for (auto [flag, v] : std::initializer_list<std::pair<const char*, const std::string*>>{
           {"listen", &c.listen},
           {"metrics-listen", &c.metrics_listen},
           {"tls-cert", &c.tls_cert},
           {"tls-key", &c.tls_key},
           {"model-dir", &c.model_dir},
           {"device", &c.device},
           {"voices-dir", &c.voices_dir},
           {"grouping", &c.grouping},
           {"scheduling", &c.scheduling},
           {"log-level", &c.log_level}}) {
    for (char ch : *v) {
      if (absl::ascii_iscntrl(static_cast<unsigned char>(ch))) {
        return Invalid(flag, absl::StrCat("contains a control character (byte ",
                                          static_cast<int>(static_cast<unsigned char>(ch)),
                                          "); was '", absl::CEscape(*v), "'"));
      }
    }
  }
  if (auto s = CheckHostPort("listen", c.listen); !s.ok()) return s;
  if (!c.metrics_listen.empty()) {
    if (auto s = CheckHostPort("metrics-listen", c.metrics_listen); !s.ok()) return s;
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return Invalid(c.tls_cert.empty() ? "tls-cert" : "tls-key",
                   "must be set together with --tls-cert and --tls-key");
  }
  if (c.max_connection_age_s < 0) return Invalid("max-connection-age-s", "must be >= 0");
  if (c.model_dir.empty()) return Invalid("model-dir", "must not be empty");
  bool device_ok = c.device == "cpu";
  if (c.device.rfind("cuda:", 0) == 0) {
    int index = -1;
    device_ok = absl::SimpleAtoi(c.device.substr(5), &index) && index >= 0;
  }
  // The simulated accelerator (docs/simulator.md): sim, sim:NAME, sim:PATH.json.
  if (c.device == "sim" || (c.device.rfind("sim:", 0) == 0 && c.device.size() > 4)) {
    device_ok = true;
  }
  if (!device_ok) {
    return Invalid("device",
                   absl::StrCat("must be cpu, cuda:N or sim[:PROFILE]; was '", c.device, "'"));
  }
  auto positive = [](const char* flag, int64_t v) {
    return v > 0 ? absl::OkStatus() : Invalid(flag, absl::StrCat("must be positive; was ", v));
  };
  for (auto [flag, v] : std::initializer_list<std::pair<const char*, int64_t>>{
           {"max-batch-size", c.max_batch_size},
           {"max-queue-jobs", c.max_queue_jobs},
           {"max-wait-us", c.max_wait_us},
           {"max-streams", c.max_streams},
           {"max-tokens-per-chunk", c.max_tokens_per_chunk},
           {"max-tokens-per-utterance", c.max_tokens_per_utterance},
           {"max-message-bytes", c.max_message_bytes},
           {"max-voices", c.max_voices},
           {"max-voice-bytes", c.max_voice_bytes}}) {
    if (auto s = positive(flag, v); !s.ok()) return s;
  }
  if (c.voices_sync_interval_ms < 10) {
    return Invalid("voices-sync-interval-ms",
                   absl::StrCat("must be >= 10; was ", c.voices_sync_interval_ms));
  }
  if (c.voice_cache_mb < 0) return Invalid("voice-cache-mb", "must be >= 0 (0 = no limit)");
  if (c.intra_op_threads < 0) {
    return Invalid("intra-op-threads", "must be >= 0 (0 = torch's default)");
  }
  if (c.max_batch_tokens < 0) return Invalid("max-batch-tokens", "must be >= 0 (0 = no budget)");
  if (c.idle_grace_us < 0) return Invalid("idle-grace-us", "must be >= 0");
  if (!(c.early_fire_fraction > 0.0 && c.early_fire_fraction <= 1.0)) {
    return Invalid("early-fire-fraction",
                   absl::StrCat("must be in (0, 1]; was ", c.early_fire_fraction));
  }
  if (!(c.max_padding_waste >= 0.0 && c.max_padding_waste < 1.0)) {
    return Invalid("max-padding-waste",
                   absl::StrCat("must be in [0, 1); was ", c.max_padding_waste));
  }
  if (!(c.join_amortization >= 0.0 && c.join_amortization <= 100.0)) {
    return Invalid("join-amortization",
                   absl::StrCat("must be in [0, 100]; was ", c.join_amortization));
  }
  if (c.grouping != "voice" && c.grouping != "mixed") {
    return Invalid("grouping", absl::StrCat("must be voice or mixed; was '", c.grouping, "'"));
  }
  if (c.scheduling != "batch" && c.scheduling != "step") {
    return Invalid("scheduling", absl::StrCat("must be batch or step; was '", c.scheduling, "'"));
  }
  if (c.scheduling == "step" && c.grouping != "mixed") {
    return Invalid("scheduling", "step needs --grouping mixed (rows of any voice share steps)");
  }
  if (c.max_tokens_per_chunk > c.max_tokens_per_utterance) {
    return Invalid("max-tokens-per-chunk", "must not exceed --max-tokens-per-utterance");
  }
  if (!(c.drain_grace_s >= 0.0)) return Invalid("drain-grace-s", "must be >= 0");
  if (c.max_streams_per_peer < 0) {
    return Invalid("max-streams-per-peer", "must be >= 0 (0 = no per-client limit)");
  }
  if (!(c.stream_idle_timeout_s >= 0.0)) {
    return Invalid("stream-idle-timeout-s", "must be >= 0 (0 = never)");
  }
  static const char* kLevels[] = {"debug", "info", "warning", "error"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels)) {
    return Invalid("log-level",
                   absl::StrCat("must be debug, info, warning or error; was '", c.log_level, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ParseResult> ParseConfig(int argc, const char* const* argv) {
  ParseResult result;
  CLI::App app{
      "vocoderd: streaming S3Gen vocoder over gRPC.\n"
      "Every flag --foo-bar can also be set by VOCODERD_FOO_BAR or in the --config file.\n"
      "Precedence: flag > environment > config file > default.",
      "vocoderd"};
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  app.set_config("--config", "", "Read flags from a TOML or INI file")
      ->envname("VOCODERD_CONFIG")
      ->group("Config");
  bool print_config = false;
  app.add_flag("--print-config", print_config, "Print the effective configuration and exit")
      ->group("Config");
  const std::vector<Binding> bindings = Bind(&app, result.config);
  // CLI11 ranks a config file above the environment; vocoderd wants
  // flag > environment > file, the usual order on Kubernetes. So environment
  // values enter as leading flags that real flags override (TakeLast), and the
  // config file fills only what neither set.
  std::vector<std::string> args;
  for (const Binding& b : bindings) {
    if (const char* v = std::getenv(EnvName(b.flag).c_str()); v != nullptr) {
      // Two arguments, not "--flag=value": CLI11 reads "--flag=" (an empty
      // value) as "--flag" and would take the next argument as its value.
      args.push_back(absl::StrCat("--", b.flag));
      args.emplace_back(v);
    }
  }
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    result.action = ParseResult::Action::kExit;
    result.output = app.help();
    return result;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  if (auto s = Validate(result.config); !s.ok()) return s;
  if (print_config) {
    result.action = ParseResult::Action::kExit;
    result.output = Render(result.config);
  }
  return result;
}

std::vector<std::string> EnvironmentVariables() {
  Config scratch;
  std::vector<std::string> names = {"VOCODERD_CONFIG"};
  for (const auto& b : Bind(nullptr, scratch)) names.push_back(EnvName(b.flag));
  std::sort(names.begin(), names.end());
  return names;
}

std::string Render(const Config& config) {
  Config scratch;
  std::ostringstream out;
  out << "# vocoderd effective configuration (load with --config)\n";
  for (const auto& b : Bind(nullptr, scratch)) {
    out << b.flag << " = " << b.render(config) << "\n";
  }
  return out.str();
}

}  // namespace vocoder::config

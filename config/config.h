// vocoderd's configuration: every knob of the server, the batcher and the
// limits, settable by command-line flag, by VOCODERD_* environment variable
// and from a config file.
//
// Precedence (highest first): command-line flag > environment variable >
// config file (--config, TOML or INI) > built-in default. Each flag --foo-bar
// has the variable VOCODERD_FOO_BAR.
//
// Thread-safety: ParseConfig() reads the process environment; call it before
// starting threads. Config is a plain value type.
#ifndef VOCODER_CONFIG_CONFIG_H_
#define VOCODER_CONFIG_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vocoder::config {

// Effective configuration. Units are in the names.
struct Config {
  // Network.
  std::string listen = "0.0.0.0:50051";
  std::string metrics_listen = "0.0.0.0:9464";
  std::string tls_cert;  // PEM file; TLS is on when both cert and key are set.
  std::string tls_key;
  int max_connection_age_s = 0;  // 0 = unlimited; see docs on HTTP/2 pinning.

  // Model.
  std::string model_dir = "models/default";
  std::string device = "cpu";              // "cpu", "cuda:N" or "sim[:PROFILE]"
  std::string voices_dir;                  // "" = <model_dir>/voices; the voice repository
  int intra_op_threads = 0;                // torch CPU threads for batches; 0 = torch's default
  int64_t voices_sync_interval_ms = 2000;  // rescan of the voice repository
  int64_t voice_cache_mb = 1024;           // idle voices kept on the device; 0 = no limit

  // Batcher (see batcher/options.h for the meaning of each).
  int max_batch_size = 32;
  int64_t max_batch_tokens = 0;  // 0 = no token budget
  double early_fire_fraction = 0.8;
  int64_t idle_grace_us = 200;
  int64_t max_wait_us = 5000;
  double max_padding_waste = 0.3;
  int max_queue_jobs = 1024;
  std::string grouping = "mixed";    // "voice" or "mixed"
  std::string scheduling = "batch";  // "batch" (whole solves) or "step" (issue #13)
  double join_amortization = 1.0;    // step: join as a cohort after this x a join's cost

  // Limits.
  int max_streams = 256;
  int max_streams_per_peer = 0;         // 0 = no per-client share (see --help)
  double stream_idle_timeout_s = 30.0;  // 0 = never
  int max_tokens_per_chunk = 500;
  int max_tokens_per_utterance = 25 * 60 * 5;  // five minutes of speech
  int max_message_bytes = 4 << 20;
  int max_voices = 1024;
  int max_voice_bytes = 2 << 20;

  // Lifecycle and logging.
  double drain_grace_s = 30.0;
  std::string log_level = "info";  // debug | info | warning | error

  bool operator==(const Config&) const = default;
};

// What the caller should do after parsing.
struct ParseResult {
  enum class Action { kRun, kExit };
  Action action = Action::kRun;
  int exit_code = 0;
  std::string output;  // --help or --print-config text, to print on stdout
  Config config;
};

// Parses argv (argv[0] is the program name). Returns InvalidArgument with a
// message naming the flag when a value is malformed or out of range, and
// kExit with the text to print for --help and --print-config.
absl::StatusOr<ParseResult> ParseConfig(int argc, const char* const* argv);

// Checks ranges and formats; the message names the offending flag.
absl::Status Validate(const Config& config);

// Every environment variable ParseConfig() reads, sorted.
std::vector<std::string> EnvironmentVariables();

// The effective values as TOML, loadable again through --config. Strings are
// written verbatim between double quotes (CLI11 2.1 reads no escapes), so a
// value holding '#', a quote or a backslash does not load back from a file:
// pass such a value by flag or environment variable.
std::string Render(const Config& config);

// Splits "HOST:PORT" ("[::1]:50051" for IPv6); InvalidArgument otherwise.
absl::Status CheckHostPort(const std::string& flag, const std::string& value);

}  // namespace vocoder::config

#endif  // VOCODER_CONFIG_CONFIG_H_

// Fuzzes the --config file (TOML or INI, read by CLI11) through ParseConfig,
// exactly as vocoderd reads it. Properties:
//   - ParseConfig never crashes, hangs or throws: it returns a value or a
//     status (an escaped exception would abort vocoderd at start-up).
//   - An accepted file yields a configuration that passes Validate.
//   - Render() of an accepted configuration parses back to the same
//     configuration (--print-config output is a valid --config file), for
//     every string value a config file can hold (config.h: no '#', quote or
//     backslash, no surrounding spaces).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"
#include "tests/fuzz/fuzz_files.h"

namespace {

absl::StatusOr<vocoder::config::ParseResult> ParseFile(const std::string& path) {
  const char* argv[] = {"vocoderd", "--config", path.c_str()};
  return vocoder::config::ParseConfig(3, argv);
}

// Values CLI11 2.1 can read back from a file (see Render in config.h).
bool FileSafe(const vocoder::config::Config& c) {
  for (const std::string* v : {&c.listen, &c.metrics_listen, &c.tls_cert, &c.tls_key, &c.model_dir,
                               &c.device, &c.voices_dir, &c.grouping, &c.log_level}) {
    if (v->find_first_of("#\"'\\") != std::string::npos) return false;
    if (!v->empty() && (v->front() == ' ' || v->back() == ' ')) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Only the file may set values: clear the environment ParseConfig reads.
  for (const std::string& name : vocoder::config::EnvironmentVariables()) unsetenv(name.c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vocoder::fuzz::WriteScratch("vocoderd.toml", data, size);
  auto parsed = ParseFile(path);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) std::abort();  // errors must say what is wrong
    return 0;
  }
  if (parsed->action != vocoder::config::ParseResult::Action::kRun) return 0;
  if (!vocoder::config::Validate(parsed->config).ok()) std::abort();
  if (!FileSafe(parsed->config)) return 0;
  const std::string rendered = vocoder::config::Render(parsed->config);
  const std::string again_path = vocoder::fuzz::WriteScratch(
      "rendered.toml", reinterpret_cast<const uint8_t*>(rendered.data()), rendered.size());
  auto again = ParseFile(again_path);
  if (!again.ok() || !(again->config == parsed->config)) std::abort();
  return 0;
}

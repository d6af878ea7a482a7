#include "config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/testing/status_matchers.h"

namespace vocoder::config {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using vocoder::testing::StatusIs;

absl::StatusOr<ParseResult> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "vocoderd");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return ParseConfig(static_cast<int>(argv.size()), argv.data());
}

// Sets an environment variable for one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(ConfigTest, DefaultsAreValid) {
  auto r = Parse({});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action, ParseResult::Action::kRun);
  EXPECT_EQ(r->config.device, "cpu");
  EXPECT_EQ(r->config.max_batch_size, 32);
  EXPECT_EQ(r->config.scheduling, "batch");
}

TEST(ConfigTest, FlagsSetValues) {
  auto r = Parse({"--listen", "127.0.0.1:0", "--device", "cuda:1", "--max-batch-size", "64",
                  "--grouping", "voice", "--max-wait-us", "2500"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.listen, "127.0.0.1:0");
  EXPECT_EQ(r->config.device, "cuda:1");
  EXPECT_EQ(r->config.max_batch_size, 64);
  EXPECT_EQ(r->config.grouping, "voice");
  EXPECT_EQ(r->config.max_wait_us, 2500);
  r = Parse({"--scheduling", "step"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.scheduling, "step");
  EXPECT_EQ(r->config.join_amortization, 1.0);
  r = Parse({"--scheduling", "step", "--join-amortization", "0"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.join_amortization, 0.0);
}

TEST(ConfigTest, PrecedenceIsFlagThenEnvironmentThenFileThenDefault) {
  const auto path = std::filesystem::temp_directory_path() / "vocoderd_config_test.toml";
  {
    std::ofstream f(path);
    f << "max-batch-size = 8\nmax-queue-jobs = 77\nmodel-dir = \"/from/file\"\n";
  }
  ScopedEnv env("VOCODERD_MAX_BATCH_SIZE", "16");
  ScopedEnv env2("VOCODERD_MODEL_DIR", "/from/env");
  auto r = Parse({"--config", path.string(), "--model-dir", "/from/flag"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.model_dir, "/from/flag");  // flag beats env and file
  EXPECT_EQ(r->config.max_batch_size, 16);       // env beats file
  EXPECT_EQ(r->config.max_queue_jobs, 77);       // file beats default
  EXPECT_EQ(r->config.max_streams, 256);         // default
  std::filesystem::remove(path);
}

TEST(ConfigTest, InvalidValuesNameTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--device", "gpu"}, "--device must be cpu, cuda:N or sim[:PROFILE]; was 'gpu'"},
      {{"--device", "cuda:-1"}, "--device"},
      {{"--device", "sim:"}, "--device"},
      {{"--device", "simulated"}, "--device"},
      {{"--listen", "nohostport"}, "--listen must be HOST:PORT"},
      {{"--listen", "h:70000"}, "--listen needs a port in 0..65535"},
      {{"--max-batch-size", "0"}, "--max-batch-size must be positive; was 0"},
      {{"--early-fire-fraction", "1.5"}, "--early-fire-fraction must be in (0, 1]"},
      {{"--max-padding-waste", "1"}, "--max-padding-waste must be in [0, 1)"},
      {{"--grouping", "by-name"}, "--grouping must be voice or mixed"},
      {{"--scheduling", "eager"}, "--scheduling must be batch or step"},
      {{"--join-amortization", "-1"}, "--join-amortization must be in [0, 100]"},
      {{"--scheduling", "step", "--grouping", "voice"}, "--scheduling step needs --grouping mixed"},
      {{"--tls-cert", "c.pem"}, "--tls-key must be set together"},
      {{"--log-level", "loud"}, "--log-level must be debug, info, warning or error"},
      {{"--max-batch-size", "many"}, "max-batch-size"},
      {{"--no-such-flag"}, "no-such-flag"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(Parse(c.args), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.args[0];
  }
}

TEST(ConfigTest, AcceptsTheSimulatedDevices) {
  for (const char* device : {"sim", "sim:h200-estimate", "sim:/tmp/profile.json"}) {
    auto r = Parse({"--device", device});
    ASSERT_TRUE(r.ok()) << device << ": " << r.status();
    EXPECT_EQ(r->config.device, device);
  }
}

TEST(ConfigTest, InvalidEnvironmentValueFailsToo) {
  ScopedEnv env("VOCODERD_MAX_QUEUE_JOBS", "-3");
  EXPECT_THAT(Parse({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                  HasSubstr("--max-queue-jobs must be positive; was -3")));
}

TEST(ConfigTest, EmptyEnvironmentValueIsAnEmptyValue) {
  ScopedEnv env("VOCODERD_METRICS_LISTEN", "");
  auto r = Parse({"--model-dir", "/m"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config.metrics_listen, "");
  EXPECT_EQ(r->config.model_dir, "/m");
}

TEST(ConfigTest, HelpAndPrintConfigExitWithText) {
  auto help = Parse({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_EQ(help->action, ParseResult::Action::kExit);
  EXPECT_THAT(help->output, HasSubstr("--model-dir"));
  EXPECT_THAT(help->output, HasSubstr("VOCODERD_MODEL_DIR"));

  auto printed = Parse({"--print-config", "--max-batch-size", "12"});
  ASSERT_TRUE(printed.ok());
  EXPECT_EQ(printed->action, ParseResult::Action::kExit);
  EXPECT_THAT(printed->output, HasSubstr("max-batch-size = 12"));
  EXPECT_THAT(printed->output, HasSubstr("device = \"cpu\""));
}

TEST(ConfigTest, RenderedConfigLoadsBackToTheSameValues) {
  Config c;
  c.max_batch_size = 48;
  c.model_dir = "/models/s3gen v2\\x";  // a space and a backslash load back verbatim
  c.early_fire_fraction = 0.123456789;  // all digits, not StrCat's six
  const auto path = std::filesystem::temp_directory_path() / "vocoderd_roundtrip.toml";
  {
    std::ofstream f(path);
    f << Render(c);
  }
  auto r = Parse({"--config", path.string()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Render(r->config), Render(c));
  EXPECT_TRUE(r->config == c);
  std::filesystem::remove(path);
}

// Found by config_file_fuzzer: an unterminated quote was read as part of the
// address, and newlines or other control bytes passed validation.
TEST(ConfigTest, RejectsMalformedHostsAndControlCharacters) {
  EXPECT_THAT(
      Parse({"--listen", "\"0.0.0.0:5005"}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--listen must be HOST:PORT")));
  EXPECT_THAT(Parse({"--metrics-listen", "a b:1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--metrics-listen")));
  EXPECT_THAT(Parse({"--model-dir", "/m\nx"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("control character")));
  for (const char* ok : {"0.0.0.0:1", "[::]:2", "[fe80::1%eth0]:3", "vocoderd-0.svc:4"}) {
    EXPECT_TRUE(Parse({"--listen", ok}).ok()) << ok;
  }
}

TEST(ConfigTest, EveryFlagHasAnEnvironmentVariable) {
  const auto vars = EnvironmentVariables();
  EXPECT_THAT(vars, Contains("VOCODERD_LISTEN"));
  EXPECT_THAT(vars, Contains("VOCODERD_METRICS_LISTEN"));
  EXPECT_THAT(vars, Contains("VOCODERD_MODEL_DIR"));
  EXPECT_THAT(vars, Contains("VOCODERD_DEVICE"));
  EXPECT_THAT(vars, Contains("VOCODERD_VOICES_DIR"));
  EXPECT_THAT(vars, Contains("VOCODERD_DRAIN_GRACE_S"));
}

}  // namespace
}  // namespace vocoder::config

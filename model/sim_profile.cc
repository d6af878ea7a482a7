#include "model/sim_profile.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace vocoder::model {

// Generated at build time from model/profiles/*.json (cmake/EmbedProfiles.cmake).
extern const std::pair<const char*, const char*> kShippedSimProfileData[];
extern const int kNumShippedSimProfiles;

namespace {

using nlohmann::json;

absl::Status ReadStage(const json& j, const char* key, StageCost& out, const std::string& origin) {
  if (!j.contains(key) || !j.at(key).is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": stages.", key, " is missing or not an object"));
  }
  const json& s = j.at(key);
  const std::pair<const char*, double*> fields[] = {
      {"floor_ms", &out.floor_ms},
      {"overhead_ms", &out.overhead_ms},
      {"ms_per_unit", &out.ms_per_unit},
      {"ms_per_unit_sq", &out.ms_per_unit_sq},
      {"flop_linear", &out.flop_linear},
      {"flop_quadratic", &out.flop_quadratic},
      {"peak_tflops", &out.peak_tflops},
      {"efficiency_max", &out.efficiency_max},
      {"efficiency_knee_units", &out.efficiency_knee_units}};
  for (const auto& [name, dst] : fields) {
    if (!s.contains(name)) continue;
    if (!s.at(name).is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": stages.", key, ".", name, " must be a number"));
    }
    *dst = s.at(name).get<double>();
    if (*dst < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": stages.", key, ".", name, " must be >= 0; was ", *dst));
    }
  }
  if (out.peak_tflops > 0 && (out.efficiency_max <= 0 || out.efficiency_max > 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": stages.", key, ".efficiency_max must be in (0, 1]; was ", out.efficiency_max));
  }
  if (out.PredictMs(1, 1) <= 0 && out.PredictMs(64, 1000) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": stages.", key, " predicts no time for any shape"));
  }
  return absl::OkStatus();
}

}  // namespace

double StageCost::PredictMs(int64_t rows, int64_t len) const {
  const double r = static_cast<double>(rows), l = static_cast<double>(len);
  const double units = r * l;
  double ms = overhead_ms + ms_per_unit * units + ms_per_unit_sq * r * l * l;
  if (peak_tflops > 0) {
    const double flops = units * (flop_linear + flop_quadratic * l);
    const double eff =
        efficiency_max *
        (efficiency_knee_units > 0 ? std::min(1.0, units / efficiency_knee_units) : 1.0);
    if (eff > 0) ms += flops / (peak_tflops * 1e12 * eff) * 1e3;
  }
  return std::max(floor_ms, ms);
}

absl::StatusOr<SimProfile> ParseSimProfile(absl::string_view text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, " is not valid JSON: ", e.what()));
  }
  if (!j.is_object() || j.value("format", "") != kSimProfileFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a simulator profile (want \"format\": \"", kSimProfileFormat,
                     "\"); see docs/simulator.md"));
  }
  SimProfile p;
  try {
    p.name = j.value("name", "");
    p.description = j.value("description", "");
    p.estimate = j.value("estimate", false);
    p.run_overhead_ms = j.value("run_overhead_ms", 0.0);
    p.jitter_cv = j.value("jitter_cv", 0.0);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": malformed field: ", e.what()));
  }
  if (p.name.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": no \"name\""));
  if (p.run_overhead_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": run_overhead_ms must be >= 0"));
  }
  if (!(p.jitter_cv >= 0 && p.jitter_cv <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": jitter_cv must be in [0, 1]"));
  }
  if (!j.contains("stages") || !j.at("stages").is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no \"stages\" object"));
  }
  const json& stages = j.at("stages");
  if (auto s = ReadStage(stages, "encoder", p.encoder, origin); !s.ok()) return s;
  if (auto s = ReadStage(stages, "estimator", p.estimator, origin); !s.ok()) return s;
  if (auto s = ReadStage(stages, "hift", p.hift, origin); !s.ok()) return s;
  return p;
}

bool IsSimDevice(absl::string_view device) {
  return device == "sim" || absl::StartsWith(device, "sim:");
}

std::vector<std::string> ShippedSimProfiles() {
  std::vector<std::string> names;
  for (int i = 0; i < kNumShippedSimProfiles; ++i)
    names.emplace_back(kShippedSimProfileData[i].first);
  return names;
}

absl::StatusOr<SimProfile> LoadSimProfile(absl::string_view device) {
  if (!IsSimDevice(device)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", device, "' is not a simulated device (sim, sim:NAME or sim:PATH.json)"));
  }
  const absl::string_view spec =
      device == "sim" ? absl::string_view(kDefaultSimProfile) : device.substr(4);
  if (spec.empty()) return absl::InvalidArgumentError("device 'sim:' names no profile");
  if (absl::EndsWith(spec, ".json") || absl::StrContains(spec, '/')) {
    const std::string path(spec);
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read simulator profile ", path));
    std::stringstream ss;
    ss << in.rdbuf();
    return ParseSimProfile(ss.str(), path);
  }
  for (int i = 0; i < kNumShippedSimProfiles; ++i) {
    if (spec == kShippedSimProfileData[i].first) {
      return ParseSimProfile(kShippedSimProfileData[i].second,
                             absl::StrCat("shipped profile ", spec));
    }
  }
  return absl::NotFoundError(absl::StrCat("no shipped simulator profile '", spec,
                                          "' (shipped: ", absl::StrJoin(ShippedSimProfiles(), ", "),
                                          "); or give a file: --device sim:PATH.json"));
}

}  // namespace vocoder::model

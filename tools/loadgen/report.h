// vocoder-loadgen's output: a table on stdout as levels finish, one JSON
// document and one CSV row per level. Field names are an interface
// (scripts/bench, tools/bench/plot.py and docs/benchmarks.md read them): keep
// them stable.
#ifndef VOCODER_TOOLS_LOADGEN_REPORT_H_
#define VOCODER_TOOLS_LOADGEN_REPORT_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tools/loadgen/loadgen.h"

namespace vocoder::loadgen {

nlohmann::json LevelJson(const LevelResult& r);
nlohmann::json OptionsJson(const LoadOptions& o, const std::vector<std::string>& voices);

// The header and a row of the stdout table.
std::string TableHeader();
std::string TableRow(const LevelResult& r);

// CSV: a header line and one flat row per level.
std::string CsvHeader();
std::string CsvRow(const LevelResult& r);

}  // namespace vocoder::loadgen

#endif  // VOCODER_TOOLS_LOADGEN_REPORT_H_

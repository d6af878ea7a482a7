// Scratch files for fuzzers whose target reads a path (the config file, a
// model directory): one private directory per fuzzer process, removed at exit.
#ifndef VOCODER_TESTS_FUZZ_FUZZ_FILES_H_
#define VOCODER_TESTS_FUZZ_FUZZ_FILES_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace vocoder::fuzz {

// The process's scratch directory (created on first use under $TMPDIR).
inline const std::string& ScratchDir() {
  // Never destroyed: the exit hook below runs after static destructors.
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* pattern =
        new std::string(std::string(tmp != nullptr ? tmp : "/tmp") + "/vocoder-fuzz-XXXXXX");
    if (mkdtemp(pattern->data()) == nullptr) std::abort();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return pattern;
  }();
  return *dir;
}

// Writes `size` bytes to ScratchDir()/name (truncating) and returns the path.
inline std::string WriteScratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = ScratchDir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
  return path;
}

}  // namespace vocoder::fuzz

#endif  // VOCODER_TESTS_FUZZ_FUZZ_FILES_H_

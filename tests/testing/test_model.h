// Where the model tests find the tiny S3Gen exports made by the CTest
// fixtures: the standard model (export_tiny_model) and, beside it, the same
// tiny S3Gen with Chatterbox Turbo's meanflow decoder (export_tiny_turbo_model).
#ifndef VOCODER_TESTS_TESTING_TEST_MODEL_H_
#define VOCODER_TESTS_TESTING_TEST_MODEL_H_

#include <cstdlib>
#include <string>

namespace vocoder::testing {

inline std::string TestModelDir() {
  const char* dir = std::getenv("VOCODER_TEST_MODEL_DIR");
  return dir != nullptr ? dir : "build/release/test-model";
}

// $VOCODER_TEST_TURBO_MODEL_DIR, else TestModelDir() + "-turbo".
inline std::string TestTurboModelDir() {
  const char* dir = std::getenv("VOCODER_TEST_TURBO_MODEL_DIR");
  return dir != nullptr ? dir : TestModelDir() + "-turbo";
}

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_TEST_MODEL_H_

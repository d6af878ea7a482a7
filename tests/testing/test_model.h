// Where the model tests find the tiny S3Gen exported by the export_tiny_model
// CTest fixture.
#ifndef VOCODER_TESTS_TESTING_TEST_MODEL_H_
#define VOCODER_TESTS_TESTING_TEST_MODEL_H_

#include <cstdlib>
#include <string>

namespace vocoder::testing {

inline std::string TestModelDir() {
  const char* dir = std::getenv("VOCODER_TEST_MODEL_DIR");
  return dir != nullptr ? dir : "build/release/test-model";
}

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_TEST_MODEL_H_

// Waiting on a condition in end-to-end tests, instead of sleeping for a time
// that is usually long enough: polls `done` (every millisecond) until it
// holds, false after `limit`, which only a hang reaches. What the test then
// asserts is the state it waited for, not how long it took.
#ifndef VOCODER_TESTS_TESTING_WAIT_H_
#define VOCODER_TESTS_TESTING_WAIT_H_

#include <chrono>
#include <thread>

namespace vocoder::testing {

template <typename P>
bool WaitFor(P done, std::chrono::steady_clock::duration limit = std::chrono::minutes(1)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace vocoder::testing

#endif  // VOCODER_TESTS_TESTING_WAIT_H_

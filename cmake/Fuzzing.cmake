# libFuzzer targets (the fuzz preset: clang 14, SANITIZE=fuzzer).
#
#   vocoder_fuzzer(NAME SOURCES a.cc ... [LIBS lib ...] [SECONDS n])
#
# builds NAME from sources that define LLVMFuzzerTestOneInput, linked with
# libFuzzer, ASan and UBSan, and registers a CTest test NAME (label "fuzz")
# that fuzzes for SECONDS (default VOCODER_FUZZ_SECONDS) starting from the
# seed corpus tests/fuzz/corpus/NAME/ in the repository. New inputs go to
# build/fuzz/corpus/NAME/, never into the repository; a crash leaves its input
# in build/fuzz/artifacts/ and fails the test. Outside the fuzz preset the
# function does nothing, so fuzz targets never slow the other builds.
#
# A longer run by hand (the seeds are read, findings kept in the build dir):
#   build/fuzz/tests/fuzz/NAME -max_total_time=600 -print_final_stats=1 \
#       build/fuzz/corpus/NAME tests/fuzz/corpus/NAME
set(VOCODER_FUZZ_SECONDS 5 CACHE STRING "Seconds each fuzzer runs in CTest (the fuzz preset)")

if(SANITIZE STREQUAL "fuzzer")
  add_custom_target(fuzzers)
endif()

function(vocoder_fuzzer name)
  if(NOT SANITIZE STREQUAL "fuzzer")
    return()
  endif()
  cmake_parse_arguments(F "" "SECONDS" "SOURCES;LIBS" ${ARGN})
  if(NOT F_SECONDS)
    set(F_SECONDS ${VOCODER_FUZZ_SECONDS})
  endif()
  set(seeds ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name})
  if(NOT IS_DIRECTORY ${seeds})
    message(FATAL_ERROR "vocoder_fuzzer(${name}): no seed corpus at ${seeds}")
  endif()
  add_executable(${name} ${F_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${F_LIBS} vocoder_warnings)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  add_dependencies(fuzzers ${name})
  set(corpus ${CMAKE_BINARY_DIR}/corpus/${name})
  set(artifacts ${CMAKE_BINARY_DIR}/artifacts/)
  file(MAKE_DIRECTORY ${corpus} ${artifacts})
  # -timeout: one input running longer is a finding (a hang); -rss_limit_mb
  # bounds memory; -print_final_stats prints executions and coverage.
  math(EXPR limit "${F_SECONDS} * 4 + 60")
  add_test(NAME ${name}
           COMMAND ${name} -max_total_time=${F_SECONDS} -timeout=10 -rss_limit_mb=2048
                   -print_final_stats=1 -artifact_prefix=${artifacts}${name}- ${corpus} ${seeds})
  set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT ${limit}
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1")
endfunction()

# SANITIZE=address (ASan + UBSan) or SANITIZE=thread (TSan) instruments every
# target of the build; the asan/tsan presets set it. SANITIZE=fuzzer (the fuzz
# preset, clang only) adds libFuzzer's coverage instrumentation to ASan + UBSan;
# only vocoder_fuzzer() targets link libFuzzer itself (cmake/Fuzzing.cmake).
set(SANITIZE "" CACHE STRING "Sanitizer build: address | thread | fuzzer | empty")
if(SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(SANITIZE STREQUAL "fuzzer")
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SANITIZE=fuzzer needs clang (libFuzzer); the fuzz preset sets clang++-14")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(NOT SANITIZE STREQUAL "")
  message(FATAL_ERROR "SANITIZE must be address, thread, fuzzer or empty; was '${SANITIZE}'")
endif()

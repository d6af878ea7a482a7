# Warnings as errors on the project's own targets only: link
# vocoder_warnings PRIVATE. Generated protobuf code and third-party headers
# (included as SYSTEM) are not affected.
add_library(vocoder_warnings INTERFACE)
target_compile_options(vocoder_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Werror>)

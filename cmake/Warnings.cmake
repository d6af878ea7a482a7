# Warnings as errors on the project's own targets only: link
# vocoder_warnings PRIVATE. Generated protobuf code and third-party headers
# (included as SYSTEM) are not affected.
#
# Clang builds (the fuzz preset; any clang configure) also check the lock
# annotations (-Wthread-safety): ABSL_GUARDED_BY members and
# ABSL_EXCLUSIVE_LOCKS_REQUIRED methods on batcher/mutex.h's Mutex. GCC has
# no such analysis and ignores the annotations.
add_library(vocoder_warnings INTERFACE)
target_compile_options(vocoder_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Werror>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:Clang>>:-Wthread-safety>)

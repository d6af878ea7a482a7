# SANITIZE=address (ASan + UBSan) or SANITIZE=thread (TSan) instruments every
# target of the build; the asan/tsan presets set it.
set(SANITIZE "" CACHE STRING "Sanitizer build: address | thread | empty")
if(SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT SANITIZE STREQUAL "")
  message(FATAL_ERROR "SANITIZE must be address, thread or empty; was '${SANITIZE}'")
endif()

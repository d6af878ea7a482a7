// Thread stack sizes that leave room for static TLS (thread_stack.cc): the
// reason CivetWeb, and with it prometheus-cpp's Exposer, failed to start
// inside vocoderd.
#ifndef VOCODER_SERVER_THREAD_STACK_H_
#define VOCODER_SERVER_THREAD_STACK_H_

#include <cstddef>

namespace vocoder::server {

// Bytes added to every stack size requested through pthread_attr_setstacksize
// in this process: the static TLS of all libraries loaded at start, plus
// slack. Thread-safe. Calling it also links the interposer into a binary.
size_t StackReserveForStaticTls();

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_THREAD_STACK_H_

// The edge's annotated mutex: batcher/mutex.h (std::mutex underneath, for
// ThreadSanitizer; Clang's thread-safety capabilities on top, checked under
// -Wthread-safety).
#ifndef VOCODER_SERVER_SYNC_H_
#define VOCODER_SERVER_SYNC_H_

#include "batcher/mutex.h"

namespace vocoder::server {

using batcher::Mutex;
using batcher::MutexLock;

}  // namespace vocoder::server

#endif  // VOCODER_SERVER_SYNC_H_

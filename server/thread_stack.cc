// Thread stacks that survive static TLS: why CivetWeb (and so
// prometheus-cpp's Exposer) could not start inside vocoderd.
//
// glibc carves a new thread's static TLS (the thread_local data of every
// library loaded at start) out of the stack size the caller asked for, and
// fails pthread_create with EINVAL when the stack cannot hold it (sourceware
// bug 11787). Debian's CivetWeb asks for 100 KiB stacks (its
// CIVETWEB_THREAD_STACK_SIZE); vocoderd links LibTorch and the CUDA
// libraries, whose static TLS is about 190 KiB (libcublasLt alone 94 KiB). So
// CivetWeb's first worker could not start ("Cannot create threads", reported
// only through CivetWeb's log callback), and prometheus-cpp said only "null
// context when constructing CivetServer". The same call works in a program
// without torch.
//
// vocoderd defines pthread_attr_setstacksize (the executable's definition
// interposes on libc's for every library) and adds the static TLS size to
// each requested size, so every thread keeps the stack its creator asked for.
#include "server/thread_stack.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>

#include <cstddef>

namespace vocoder::server {
namespace {

size_t StaticTlsBytes() {
  size_t total = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_TLS) {
            const size_t align = ph.p_align > 0 ? ph.p_align : 1;
            *static_cast<size_t*>(out) += (ph.p_memsz + align - 1) / align * align;
          }
        }
        return 0;
      },
      &total);
  return total + 4096;  // glibc's own TCB and alignment slack
}

}  // namespace

size_t StackReserveForStaticTls() {
  static const size_t tls = StaticTlsBytes();
  return tls;
}

}  // namespace vocoder::server

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (real == nullptr) return 38;  // ENOSYS: cannot happen with glibc
  return real(attr, size + vocoder::server::StackReserveForStaticTls());
}

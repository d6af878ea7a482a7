#include "batcher/job.h"

#include <cstdio>

namespace vocoder::batcher {
namespace {

uint64_t Mix(uint64_t h) {
  // splitmix64 finalizer: spreads FNV's weak high bits.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace

Fingerprint FingerprintBytes(const void* data, size_t size, Fingerprint seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t a = 0xcbf29ce484222325ULL ^ seed.hi;
  uint64_t b = 0x84222325cbf29ce4ULL ^ Mix(seed.lo + 0x9e3779b97f4a7c15ULL);
  for (size_t i = 0; i < size; ++i) {
    a = (a ^ p[i]) * 0x100000001b3ULL;
    b = (b ^ p[i]) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
  }
  return Fingerprint{Mix(a ^ size), Mix(b + size)};
}

std::string Fingerprint::ToHex() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

}  // namespace vocoder::batcher

// Transparent-huge-page advice for fresh, large output buffers.
#pragma once

#include <sys/mman.h>

#include <cstdint>

namespace fd {

// A fresh multi-MiB output costs one page fault per 4 KiB on first touch (about as much time as writing it);
// asking for transparent huge pages on its 2 MiB-aligned interior before a kernel touches it cuts that 512-fold
// (what torch does for every buffer under THP_MEM_ALLOC_ENABLE=1). Advisory: ignored where THP is off, errors too.
inline void advise_huge_pages(void* p, int64_t nbytes) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (nbytes < static_cast<int64_t>(2 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(nbytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)nbytes;
#endif
}

}  // namespace fd

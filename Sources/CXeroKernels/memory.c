// Process-wide allocator settings for the engine (ScratchMemory.swift).
#include "xero_kernels.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void xk_retain_scratch_memory(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

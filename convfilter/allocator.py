"""The C allocator's settings for a run over many images (glibc only; elsewhere nothing changes).

glibc gives memory freed by a worker thread back to the kernel as soon as more than twice its
largest recent block is free at the top of that thread's heap. A worker holds a decoded image and
its result (3 MB each for a 3 MP photo), so every image freed more than that, and the next one
took it back from the kernel page by page: 280,000 page faults in 200 photos, about 1.1 GB
zeroed again (seen with `strace -e madvise`: 180 calls of MADV_DONTNEED on 6 MB). Keeping up to
TRIM_THRESHOLD free per heap, and blocks below MMAP_THRESHOLD in the heaps, removes them:
`-j 1` sharpen over 200 photos went from 4.87 to 4.33 s here (medians of 5).
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for its adaptive threshold on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # as glibc's adaptive rule: twice the mmap threshold


def keep_freed_memory() -> bool:
    """Set glibc's thresholds to the top of their adaptive range (fixed from then on). True if
    set; False where the C library has no `mallopt` (macOS, Windows) or refuses the values."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this Python runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

"""Keep a worker's freed request buffers for the next request instead of handing them back to the OS.

A /predict request allocates a few large arrays (the decoded image, the full-size probability map and
mask: ~15 MB for a 1348x1070 frame) and frees them at its end. glibc's malloc tunes itself: a large
free can raise its mmap threshold or shrink the heap, and the next request then faults the same pages
back in, zero-filled. Whether that happens depends on the exact sequence of sizes: the Lite2 model's
worker took ~1,000 minor page faults (4 MB) a request with the component filter and almost none
without it, the tiny test model's worker 750-1,900 either way, and the API p50 rose by several
milliseconds in every stage, not only the filter's (docs/experiments.md, serving latency). Fixed
thresholds stop the self-tuning: buffers under `MMAP_THRESHOLD` come from the heap and stay there,
and the heap is trimmed only once more than `TRIM_THRESHOLD` is free (tests/test_serve_memory.py).
The price is that a worker keeps its high-water mark of memory, which POLYPSEG_MAX_PIXELS bounds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("polypseg.memory")

M_TRIM_THRESHOLD = -1  # glibc malloc.h mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory() -> bool:
    """Pin glibc's malloc thresholds (see the module doc); False where there is no glibc mallopt
    (musl, macOS): those allocators keep their own behaviour and serving works the same."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("mallopt refused the thresholds; malloc keeps tuning itself")
    return ok

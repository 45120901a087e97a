"""Keep a process's freed large buffers for reuse instead of handing them back to the OS.

glibc's malloc tunes itself: a large free can raise its mmap threshold or shrink the heap, and the
next allocation of that size then faults the same pages back in, zero-filled. Two processes here
free and re-allocate the same large buffers over and over:
- a gunicorn worker, per /predict request (the decoded image, the full-size probability map and mask:
  ~15 MB for a 1348x1070 frame). The Lite2 model's worker took ~1,000 minor page faults (4 MB) a
  request with the component filter and almost none without it, and the API p50 rose by several
  milliseconds in every stage, not only the filter's (docs/experiments.md, serving latency);
- training, per step (activations and their gradients: 75,000-100,000 faults, 300-400 MB, a step of batch 8
  at 256 px; `make bench-train-step` times the step with and without the thresholds).
Fixed thresholds stop the self-tuning: buffers under `MMAP_THRESHOLD` come from the heap and stay
there, and the heap is trimmed only once more than `TRIM_THRESHOLD` is free (tests/test_serve_memory.py,
tests/test_bench_train_step.py). The price is that the process keeps its high-water mark of memory,
which POLYPSEG_MAX_PIXELS bounds in a worker and the batch size in training. Buffers above 32 MB are
still mapped and unmapped each time: glibc does not keep heap chunks that large.
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
    (musl, macOS): those allocators keep their own behaviour and serving and training work the same,
    only without this saving."""
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

"""Allocator settings for a process that scores batch after batch.

Every batch allocates arrays of tens of megabytes (windows, words, model inputs) and
frees them before the next. With the defaults, each comes fresh from the kernel: glibc
maps allocations above its mmap threshold (at most 32 MiB) anew and unmaps them on free,
and numpy asks for transparent huge pages on large arrays, whose first touch can stall
in the kernel's compaction. Measured on this project's 2-core machine (200k-flow conn.log,
both models, three runs each): 50k flows/s by default, 57k without numpy's huge-page
advice, 60k with that and glibc keeping freed memory for the next batch; peak RSS the same.
Threads share two malloc arenas (:data:`ARENA_MAX`).

:func:`tune_for_batches` applies both, for the CLI's process. A variable the user set
(``MALLOC_*`` for glibc, ``NUMPY_MADVISE_HUGEPAGE`` for numpy) is left to win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

import numpy as np

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
#: allocations below this come from the heap and are reused after free
MMAP_THRESHOLD = 512 << 20
#: free memory at the top of the heap kept for the next batch instead of returned
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20
#: malloc arenas: each thread that allocates (a scorer's lane, the reader, the writer) would
#: get one of its own and keep its batch's freed memory there (the trim threshold above),
#: so their peaks add up; two arenas measured the same speed and 110-130 MB less peak RSS
#: (1M flows, lanes on: 1,136-1,152 -> 1,028-1,030 MiB; 1M one-flow hosts: 1,596 -> 1,467 MiB)
ARENA_MAX = 2


def tune_for_batches() -> bool:
    """Apply the settings above where they apply (glibc, numpy); True if glibc's were."""
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        setter = getattr(getattr(np, "_core", None), "multiarray", None)
        setter = getattr(setter, "_set_madvise_hugepage", None)
        if setter is not None:
            setter(False)
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = all(
        libc.mallopt(option, value) == 1
        for option, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD),
                              (_M_ARENA_MAX, ARENA_MAX))
    )
    log.debug("glibc malloc tuned for batches: %s", done)
    return done

"""glibc malloc settings that keep freed memory for reuse (Linux with glibc; elsewhere nothing changes).

Torch's CPU tensors come straight from ``malloc``. By default glibc hands a freed block above its (dynamic)
mmap threshold back to the kernel, trims the heap top when it is free, and serves a non-main thread (Ray
Data's UDF thread, our torch thread) from a per-thread arena whose heaps cannot hold a block over 64 MiB, so
such blocks are always fresh mappings. An encode allocates and frees the same large activations window after
window, and every one of them is faulted in again: 3.6-4.6 million page faults and 8-10 s of kernel time for
8 minutes of music on 2 cores. With one arena and 1 GiB thresholds the same loop takes 0.25 million faults
and about 1 s of kernel time, and runs 1.6x faster; peak resident memory stays within the default's spread
(measured in fresh processes: ``benchmarks/tokenize_throughput.py``). The cost: memory freed by an encode
stays with the process for the next one instead of going back to the system.

Two ways to apply the same settings:

- :func:`malloc_env` for a process about to start (a Ray actor's ``runtime_env``): glibc reads it at start,
  before any thread exists, so the one-arena setting holds for every thread.
- :func:`tune_malloc` for the running process (the CLI): the thresholds apply at once; the arena limit only
  holds if no second thread has allocated yet, so call it first thing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from (and go back to) the heap; up to 1 GiB free stays
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt parameters (malloc.h)


def malloc_env() -> dict[str, str]:
    """Environment variables that give a starting process these settings (glibc's ``MALLOC_*`` variables;
    other C libraries ignore them)."""
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(THRESHOLD_BYTES),
            "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD_BYTES)}


def tune_malloc() -> bool:
    """Apply the settings to this process with ``mallopt``; False (and a debug log) when the C library is not
    glibc or refuses a setting."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError) as e:
        logger.debug("malloc left as is: %s", e)
        return False
    refused = [name for name, param, value in (("arena_max", _M_ARENA_MAX, 1),
                                               ("mmap_threshold", _M_MMAP_THRESHOLD, THRESHOLD_BYTES),
                                               ("trim_threshold", _M_TRIM_THRESHOLD, THRESHOLD_BYTES))
               if mallopt(param, value) != 1]
    if refused:
        logger.debug("mallopt refused %s", refused)
    return not refused

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
import logging
import os

logger = logging.getLogger(__name__)

THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from (and go back to) the heap; up to 1 GiB free stays
# (environment variable, mallopt parameter from malloc.h, value): one arena, then the two thresholds
SETTINGS = (("MALLOC_ARENA_MAX", -8, 1), ("MALLOC_MMAP_THRESHOLD_", -3, THRESHOLD_BYTES),
            ("MALLOC_TRIM_THRESHOLD_", -1, THRESHOLD_BYTES))


def malloc_env() -> dict[str, str]:
    """Environment variables that give a starting process these settings (glibc's ``MALLOC_*`` variables;
    other C libraries ignore them)."""
    return {name: str(value) for name, _, value in SETTINGS}


def tune_malloc() -> bool:
    """Apply the settings to this process with ``mallopt``; False (and a debug log) when the C library is not
    glibc or refuses a setting."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # not a GNU system
        libc = ""
    if not libc.startswith("glibc"):
        logger.debug("malloc left as is: the C library is not glibc")
        return False
    mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    refused = [name for name, param, value in SETTINGS if mallopt(param, value) != 1]
    if refused:
        logger.debug("mallopt refused %s", refused)
    return not refused

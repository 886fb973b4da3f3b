"""codec.allocator: freed blocks are kept for reuse instead of being faulted in again on every allocation."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from codec.allocator import malloc_env

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

# Allocate, write and free a 96 MiB block 20 times (as an encode does with its activations, window after
# window) on the main thread or on a helper thread (as Ray Data and our torch thread run a stage), and print
# the page faults taken meanwhile.
LOOP = """
import ctypes, json, resource, sys, threading
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "tune":
    from codec.allocator import tune_malloc
    assert tune_malloc()
def loop():  # what torch does for a CPU tensor: malloc, write, free
    for _ in range(20):
        block = libc.malloc(96 << 20)
        ctypes.memset(block, 1, 96 << 20)
        libc.free(block)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
loop_in = threading.Thread(target=loop) if sys.argv[2] == "thread" else None
before = faults()
if loop_in:
    loop_in.start(); loop_in.join()
else:
    loop()
print(json.dumps(faults() - before))
"""


def page_faults(how: str, where: str, env: dict[str, str]) -> int:
    base = {k: v for k, v in os.environ.items() if k not in malloc_env()}
    out = subprocess.run([sys.executable, "-c", LOOP, how, where], env={**base, "PYTHONPATH": str(REPO), **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_process_started_with_malloc_env_reuses_freed_blocks(where):
    default = page_faults("-", where, {})
    tuned = page_faults("-", where, malloc_env())
    # default: every 96 MiB block is a fresh mapping (~24k faults each); tuned: only the first one faults in
    assert default > 20 * 20_000 and tuned < default / 5, (default, tuned)


def test_tune_malloc_makes_the_running_process_reuse_freed_blocks():
    default = page_faults("-", "main", {})
    tuned = page_faults("tune", "main", {})
    assert default > 20 * 20_000 and tuned < default / 5, (default, tuned)

"""Heavy imports inside Ray tasks that a task cancellation cannot break.

Ray cancels a running task (``ray.cancel``, and Ray Data when a ``limit``/``take`` is satisfied or an
iterator is dropped early) with ``_thread.interrupt_main()``: a KeyboardInterrupt in the worker's main
thread, wherever it is. If that lands inside the first ``import torch`` (seconds long), torch is left half
imported in ``sys.modules`` and every later task on that reused worker fails with "partially initialized
module 'torch'" or "module functions cannot set METH_CLASS". :func:`import_uninterrupted` holds the
interrupt until the import is done, then raises it, so the cancellation still happens.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold SIGINT / ``interrupt_main`` for the block and raise the KeyboardInterrupt after it (main
    thread only; elsewhere Python delivers no signals, so there is nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def import_uninterrupted(name: str) -> ModuleType:
    """``importlib.import_module(name)`` that an interrupt cannot cut in half (see the module doc)."""
    with deferred_interrupt():
        return importlib.import_module(name)

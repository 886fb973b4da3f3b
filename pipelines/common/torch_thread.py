"""One thread for all of a Ray Data actor's torch work.

Ray runs an actor's constructor on the actor process's main thread; Ray Data calls a callable-class UDF on a
helper thread of its own. Torch's CPU kernels run on OpenMP, and libgomp keeps one thread team per calling
thread: an actor that loaded its model in the constructor and encoded in ``__call__`` had two teams (at 2
intra-op threads, one extra worker thread), and libgomp, seeing more threads than cores, shortens its
spin-wait, so the team's worker sleeps and is woken between kernels. A stage that builds a
:class:`TorchThread` first and runs its model loading and every call through it keeps one team, whichever
thread Ray calls it from.

Measured on 2 cores (``Codec.encode`` of 40 s of real music, ``tiny``, 2 intra-op threads, fastest of 4 calls,
12 alternating pairs of fresh processes): model loaded on the main thread and encoding on a helper thread
0.86-1.05 s; everything on the helper thread 0.75-0.87 s, faster in every pair.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class TorchThread:
    """A single worker thread that runs every torch call of an actor (see the module docstring)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the torch thread: its result, or its exception raised here."""
        return self._executor.submit(fn, *args, **kwargs).result()

"""Collectives that degrade to no-ops when ``torch.distributed`` is not initialised (single process).

Every caller must reach these on every rank in the same order (lockstep), whatever data the rank holds.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group with more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks in place (unchanged in a single process). Returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s copy in place. Returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor

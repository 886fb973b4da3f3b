"""Basic layers: weight-normalised convolutions, the Snake activation, a DC block and weight-norm folding."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm


def WNConv1d(*args, **kwargs) -> nn.Conv1d:  # noqa: N802 - named like a class on purpose
    """A ``nn.Conv1d`` with a weight-norm parametrization (same arguments as ``nn.Conv1d``)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def WNConvTranspose1d(*args, **kwargs) -> nn.ConvTranspose1d:  # noqa: N802
    """A ``nn.ConvTranspose1d`` with a weight-norm parametrization."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


def WNConv2d(*args, **kwargs) -> nn.Conv2d:  # noqa: N802
    """A ``nn.Conv2d`` with a weight-norm parametrization."""
    return weight_norm(nn.Conv2d(*args, **kwargs))


class Snake1d(nn.Module):
    """Snake activation ``x + sin(alpha * x)^2 / alpha`` with one learnable alpha per channel.

    Args:
        channels: number of channels C.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, C, T] -> [B, C, T]."""
        alpha = self.alpha.to(x.dtype)
        return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


class DCBlock(nn.Module):
    """Subtract a centred moving average: a parameter-free high-pass that removes DC and drifts slower than
    the window (``sample_rate / window`` Hz; 5 Hz for 0.2 s at any rate).

    Near the ends of the signal the average covers only the samples that exist, so a chunk decoded with at
    least ``window / 2`` of context on each side gets the same output as the whole signal.

    Args:
        window: moving-average length in samples (odd lengths centre exactly).
    """

    def __init__(self, window: int):
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1 sample, got {window}")
        self.half = window // 2

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, C, T] -> [B, C, T] with every local mean removed."""
        n = x.shape[-1]
        sums = nn.functional.pad(x.double().cumsum(-1), (1, 0))  # float64: long chunks keep their precision
        i = torch.arange(n, device=x.device)
        lo, hi = (i - self.half).clamp(min=0), (i + self.half + 1).clamp(max=n)
        return x - ((sums[..., hi] - sums[..., lo]) / (hi - lo)).to(x.dtype)


def is_weight_normed(module: nn.Module) -> bool:
    """True if ``module.weight`` is produced by a parametrization."""
    return parametrize.is_parametrized(module, "weight")


def init_weight_normed_(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init of a (possibly weight-normed) conv or linear layer, zero bias.

    For a weight-normed layer the direction ``v`` is drawn and the gain ``g`` set to ``||v||``, so the
    effective weight is the drawn tensor (writing to ``module.weight`` would be lost at the next forward).
    """
    if is_weight_normed(module):
        p = module.parametrizations.weight
        with torch.no_grad():
            nn.init.trunc_normal_(p.original1, std=std)
            dims = [d for d in range(p.original1.dim()) if d != p[0].dim]
            p.original0.copy_(torch.linalg.vector_norm(p.original1, dim=dims, keepdim=True))
    elif isinstance(getattr(module, "weight", None), nn.Parameter):
        nn.init.trunc_normal_(module.weight, std=std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Remove every weight-norm parametrization below ``module`` in place, keeping the current weights.

    Use before inference: the folded model computes the same function without recomputing ``g * v/||v||``.

    Returns:
        The same module, for chaining.
    """
    for m in module.modules():
        if is_weight_normed(m):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module

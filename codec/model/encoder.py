"""Convolutional waveform encoder (DAC layout): residual units with dilations 1/3/9 and strided convs."""

from __future__ import annotations

import math

from torch import Tensor, nn

from codec.nn.layers import Snake1d, WNConv1d


class ResidualUnit(nn.Module):
    """Snake -> dilated conv (k=7) -> Snake -> 1x1 conv, added to the input. Length preserving.

    Args:
        dim: channels.
        dilation: dilation of the 7-tap conv.
    """

    def __init__(self, dim: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, C, T] -> [B, C, T]."""
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three residual units at ``dim // 2`` channels, then a strided conv (kernel 2*stride) to ``dim``.

    Args:
        dim: output channels.
        stride: downsampling factor (even).
    """

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            *(ResidualUnit(half, dilation=d) for d in (1, 3, 9)),
            Snake1d(half),
            WNConv1d(half, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, dim/2, T] -> [B, dim, T/stride]."""
        return self.block(x)


class Encoder(nn.Module):
    """Waveform -> latent frames. Channels double at each block.

    Args:
        d_model: channels of the first conv; the last block has ``d_model * 2**len(strides)``.
        strides: downsampling factor of each block (even numbers); hop = prod(strides).
        d_latent: output channels.
    """

    def __init__(self, d_model: int = 64, strides: list[int] = (2, 4, 10, 12), d_latent: int = 1024):
        super().__init__()
        for s in strides:
            if s % 2:
                raise ValueError(f"encoder strides must be even for exact lengths, got {list(strides)}")
        layers: list[nn.Module] = [WNConv1d(1, d_model, kernel_size=7, padding=3)]
        for s in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride=s))
        layers += [Snake1d(d_model), WNConv1d(d_model, d_latent, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)
        self.enc_dim = d_model

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, 1, N] with N % hop == 0 -> [B, d_latent, N / hop]."""
        return self.block(x)

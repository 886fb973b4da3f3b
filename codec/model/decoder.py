"""Convolutional waveform decoder (DAC layout): transposed-conv upsampling and residual units, tanh out."""

from __future__ import annotations

import math

from torch import Tensor, nn

from codec.model.encoder import ResidualUnit
from codec.nn.layers import DCBlock, Snake1d, WNConv1d, WNConvTranspose1d


class DecoderBlock(nn.Module):
    """Snake -> transposed conv (kernel 2*stride) -> three residual units (dilations 1/3/9).

    Args:
        input_dim: input channels.
        output_dim: output channels.
        stride: upsampling factor (even).
    """

    def __init__(self, input_dim: int, output_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            WNConvTranspose1d(input_dim, output_dim, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2)),
            *(ResidualUnit(output_dim, dilation=d) for d in (1, 3, 9)),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, input_dim, T] -> [B, output_dim, T * stride]."""
        return self.block(x)


class Decoder(nn.Module):
    """Latent frames -> waveform in [-1, 1]. Channels halve at each block.

    Args:
        input_channel: latent channels.
        channels: channels after the first conv.
        rates: upsampling factor of each block (even numbers).
        d_out: output audio channels.
        dc_block: when > 0, the last conv's output minus its moving average over this many samples goes to
            the tanh (:class:`DCBlock`): the waveform cannot carry a DC offset, which neither the mel loss nor
            the discriminators see, so training would otherwise let it drift (0 = off, the original layout).
    """

    def __init__(self, input_channel: int, channels: int, rates: list[int], d_out: int = 1, dc_block: int = 0):
        super().__init__()
        for r in rates:
            if r % 2:
                raise ValueError(f"decoder rates must be even for exact lengths, got {list(rates)}")
        layers: list[nn.Module] = [WNConv1d(input_channel, channels, kernel_size=7, padding=3)]
        dim = channels
        for i, r in enumerate(rates):
            dim = channels // 2 ** (i + 1)
            layers.append(DecoderBlock(channels // 2**i, dim, stride=r))
        layers += [Snake1d(dim), WNConv1d(dim, d_out, kernel_size=7, padding=3)]
        layers += [DCBlock(dc_block), nn.Tanh()] if dc_block else [nn.Tanh()]  # no parameters: same state keys
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, input_channel, T] -> [B, d_out, T * prod(rates)]."""
        return self.model(x)

"""GAN discriminators: multi-period (waveform folded by period) and multi-band multi-resolution STFT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.nn.layers import WNConv2d

FeatureMaps = list[Tensor]

DEFAULT_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


class PeriodDiscriminator(nn.Module):
    """2-D convs over the waveform reshaped to [T / period, period].

    Args:
        period: folding period p.
        channels: width of the first conv; later convs use 4x, 16x, 32x, 32x (capped at 1024).
    """

    def __init__(self, period: int, channels: int = 32):
        super().__init__()
        self.period = period
        widths = [1] + [min(channels * m, 1024) for m in (1, 4, 16, 32, 32)]
        self.convs = nn.ModuleList(
            WNConv2d(c_in, c_out, (5, 1), (3, 1) if i < 4 else (1, 1), padding=(2, 0))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.conv_post = WNConv2d(widths[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, x: Tensor) -> FeatureMaps:
        """x (Tensor): [B, 1, N] -> feature maps [B, C, T', p], the last one the logits [B, 1, T', p]."""
        pad = (-x.shape[-1]) % self.period
        x = F.pad(x, (0, pad), mode="reflect")
        x = x.view(x.shape[0], 1, -1, self.period)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            fmaps.append(x)
        fmaps.append(self.conv_post(x))
        return fmaps


class STFTBandDiscriminator(nn.Module):
    """Complex-STFT discriminator at one resolution with separate conv stacks per frequency band.

    Args:
        n_fft: FFT (and window) length; hop is n_fft // 4.
        bands: (low, high) fractions of the frequency axis.
        channels: conv width.
    """

    def __init__(self, n_fft: int, bands: tuple[tuple[float, float], ...] = DEFAULT_BANDS, channels: int = 32):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = n_fft // 4
        n_bins = n_fft // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

        def stack() -> nn.ModuleList:
            return nn.ModuleList([
                WNConv2d(2, channels, (3, 9), padding=(1, 4)),
                *(WNConv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)) for _ in range(3)),
                WNConv2d(channels, channels, (3, 3), padding=(1, 1)),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.conv_post = WNConv2d(channels, 1, (3, 3), padding=(1, 1))

    def spectrogram(self, x: Tensor) -> Tensor:
        """x (Tensor): [B, 1, N] -> real/imag STFT [B, 2, frames, bins] (fp32)."""
        spec = torch.stft(x.squeeze(1).float(), self.n_fft, self.hop_length, window=self.window,
                          return_complex=True)  # [B, bins, frames]
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def forward(self, x: Tensor) -> FeatureMaps:
        """x (Tensor): [B, 1, N] -> feature maps, the last one the logits [B, 1, frames, F']."""
        spec = self.spectrogram(x)
        fmaps, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs, strict=True):
            h = spec[..., lo:hi]
            for conv in convs:
                h = F.leaky_relu(conv(h), 0.1)
                fmaps.append(h)
            outs.append(h)
        fmaps.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmaps


class Discriminator(nn.Module):
    """Multi-period + multi-band multi-resolution STFT discriminator.

    Args:
        sample_rate: audio rate in Hz (kept for reference; the sub-discriminators work in samples/bins).
        periods: periods of the period discriminators.
        fft_sizes: FFT sizes of the STFT discriminators.
        bands: frequency bands (fractions of Nyquist) of each STFT discriminator.
        period_channels: first-layer width of the period discriminators (32 in DAC).
        stft_channels: width of the STFT discriminators (32 in DAC).
    """

    def __init__(self, sample_rate: int = 24000, periods: list[int] = (2, 3, 5, 7, 11),
                 fft_sizes: list[int] = (2048, 1024, 512),
                 bands: list[tuple[float, float]] = DEFAULT_BANDS,
                 period_channels: int = 32, stft_channels: int = 32):
        super().__init__()
        self.sample_rate = sample_rate
        bands = tuple((float(lo), float(hi)) for lo, hi in bands)
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p, period_channels) for p in periods]
            + [STFTBandDiscriminator(n, bands, stft_channels) for n in fft_sizes]
        )

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """Remove DC and peak-normalise each item to 0.8. x [B, 1, N] -> [B, 1, N]."""
        x = x - x.mean(dim=-1, keepdim=True)
        return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, x: Tensor) -> list[FeatureMaps]:
        """x (Tensor): [B, 1, N] -> one list of feature maps per sub-discriminator, the last map the logits."""
        x = self.preprocess(x)
        return [d(x) for d in self.discriminators]

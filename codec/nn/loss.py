"""Reconstruction and adversarial losses shared by the training step and the evaluation job."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

FeatureMaps = list[Tensor]


class MultiScaleMelLoss(nn.Module):
    """L1 distance between log10 mel spectrograms at several window sizes (DAC's mel loss).

    Built for ``sample_rate``: the filterbanks live in ``self.transforms`` (torchaudio ``MelSpectrogram``).

    Args:
        sample_rate: audio rate in Hz (24000 for this codec).
        window_lengths: STFT window (= FFT) sizes; hop is window // 4.
        n_mels: mel bands per window.
        clamp_eps: floor applied to mel magnitudes before the log.
        pow: power applied to the magnitude mel before the log (1.0, as in DAC's training config, so that
            distances compare with DAC's reported mel distances).
        log_weight: weight of the log-mel L1.
        mag_weight: weight of the linear mel L1.
    """

    def __init__(self, sample_rate: int, window_lengths: list[int] = (32, 64, 128, 256, 512, 1024, 2048),
                 n_mels: list[int] = (5, 10, 20, 40, 80, 160, 320), clamp_eps: float = 1e-5, pow: float = 1.0,
                 log_weight: float = 1.0, mag_weight: float = 0.0):
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError(f"window_lengths {list(window_lengths)} and n_mels {list(n_mels)} differ in length")
        self.sample_rate = sample_rate
        self.clamp_eps = clamp_eps
        self.pow = pow
        self.log_weight = log_weight
        self.mag_weight = mag_weight
        with warnings.catch_warnings():  # the narrowest low bands of the small FFTs can be empty
            warnings.filterwarnings("ignore", message=".*filterbank has all zero values.*")
            self.transforms = nn.ModuleList(
                torchaudio.transforms.MelSpectrogram(
                    sample_rate=sample_rate, n_fft=w, win_length=w, hop_length=w // 4, n_mels=m, power=1.0,
                    center=True, norm="slaney", mel_scale="slaney")
                for w, m in zip(window_lengths, n_mels, strict=True)
            )

    @torch.no_grad()
    def spectrograms(self, x: Tensor) -> list[Tensor]:
        """Mel magnitudes of ``x`` [B, C, N] (or [B, N]) at every window size (reusable by :meth:`pairwise`)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return [mel(x.float()) for mel in self.transforms]

    @torch.no_grad()
    def pairwise(self, x: Tensor | list[Tensor], y: Tensor | list[Tensor]) -> Tensor:
        """Mel distance of every estimate to every reference (entry [i, i] equals ``forward(x[i:i+1], y[i:i+1])``).

        Args:
            x: [B, C, N] (or [B, N]) estimates, or their :meth:`spectrograms`.
            y: [M, C, N] (or [M, N]) references of the same shape, or their :meth:`spectrograms`.

        Returns:
            Tensor: [B, M] float distances.
        """
        mx_all = x if isinstance(x, list) else self.spectrograms(x)
        my_all = y if isinstance(y, list) else self.spectrograms(y)
        out = mx_all[0].new_zeros(mx_all[0].shape[0], my_all[0].shape[0])
        for mx, my in zip(mx_all, my_all, strict=True):
            lx = mx.clamp(min=self.clamp_eps).pow(self.pow).log10() if self.log_weight else None
            ly = my.clamp(min=self.clamp_eps).pow(self.pow).log10() if self.log_weight else None
            dims = tuple(range(1, my.dim()))
            for i in range(mx.shape[0]):
                if self.log_weight:
                    out[i] += self.log_weight * (lx[i:i + 1] - ly).abs().mean(dim=dims)
                if self.mag_weight:
                    out[i] += self.mag_weight * (mx[i:i + 1] - my).abs().mean(dim=dims)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Mel distance between estimate ``x`` and reference ``y``, both [B, C, N] (or [B, N]); scalar."""
        x, y = x.float(), y.float()
        loss = x.new_zeros(())
        with torch.autocast(device_type=x.device.type, enabled=False):
            for mel in self.transforms:
                mx, my = mel(x), mel(y)
                if self.log_weight:
                    lx = mx.clamp(min=self.clamp_eps).pow(self.pow).log10()
                    ly = my.clamp(min=self.clamp_eps).pow(self.pow).log10()
                    loss = loss + self.log_weight * F.l1_loss(lx, ly)
                if self.mag_weight:
                    loss = loss + self.mag_weight * F.l1_loss(mx, my)
        return loss


class MultiResolutionSTFTLoss(nn.Module):
    """L1 distance between log10 (and optionally linear) STFT magnitudes at several resolutions.

    Args:
        window_lengths: FFT sizes; hop is window // 4, Hann window.
        clamp_eps: floor applied to magnitudes before the log.
        pow: power applied to the magnitude before the log.
        log_weight: weight of the log-magnitude L1.
        mag_weight: weight of the linear-magnitude L1.
    """

    def __init__(self, window_lengths: list[int] = (2048, 512), clamp_eps: float = 1e-5, pow: float = 2.0,
                 log_weight: float = 1.0, mag_weight: float = 1.0):
        super().__init__()
        self.window_lengths = list(window_lengths)
        self.clamp_eps = clamp_eps
        self.pow = pow
        self.log_weight = log_weight
        self.mag_weight = mag_weight
        for w in self.window_lengths:
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)

    def _magnitude(self, x: Tensor, w: int) -> Tensor:
        x = x.reshape(-1, x.shape[-1]).float()
        return torch.stft(x, w, w // 4, window=getattr(self, f"window_{w}"), return_complex=True).abs()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """STFT distance between estimate ``x`` and reference ``y``, both [B, C, N] (or [B, N]); scalar."""
        loss = x.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            for w in self.window_lengths:
                mx, my = self._magnitude(x, w), self._magnitude(y, w)
                if self.log_weight:
                    lx = mx.clamp(min=self.clamp_eps).pow(self.pow).log10()
                    ly = my.clamp(min=self.clamp_eps).pow(self.pow).log10()
                    loss = loss + self.log_weight * F.l1_loss(lx, ly)
                if self.mag_weight:
                    loss = loss + self.mag_weight * F.l1_loss(mx, my)
        return loss


def discriminator_loss(d_real: list[FeatureMaps], d_fake: list[FeatureMaps]) -> Tensor:
    """LSGAN discriminator loss: real logits -> 1, fake logits -> 0, summed over sub-discriminators.

    Args:
        d_real: per sub-discriminator feature maps of the real audio (last = logits).
        d_fake: same for the generated audio (detached from the generator).

    Returns:
        Scalar loss.
    """
    loss = 0.0
    for real, fake in zip(d_real, d_fake, strict=True):
        loss = loss + torch.mean((1 - real[-1].float()) ** 2) + torch.mean(fake[-1].float() ** 2)
    return loss


def generator_loss(d_real: list[FeatureMaps], d_fake: list[FeatureMaps]) -> tuple[Tensor, Tensor]:
    """LSGAN generator loss and feature matching.

    Args:
        d_real: per sub-discriminator feature maps of the real audio (used as fixed targets).
        d_fake: same for the generated audio (with gradient to the generator).

    Returns:
        (adversarial, feature_matching): scalars; feature matching is the L1 between every intermediate
        fake and (detached) real feature map, summed over sub-discriminators and layers.
    """
    adv, fm = 0.0, 0.0
    for real, fake in zip(d_real, d_fake, strict=True):
        adv = adv + torch.mean((1 - fake[-1].float()) ** 2)
        for r, f in zip(real[:-1], fake[:-1], strict=True):
            fm = fm + F.l1_loss(f.float(), r.detach().float())
    return adv, fm


def split_real_fake(outputs: list[FeatureMaps], n_real: int) -> tuple[list[FeatureMaps], list[FeatureMaps]]:
    """Split discriminator outputs computed on ``cat([real, fake])`` along the batch dimension."""
    real = [[f[:n_real] for f in maps] for maps in outputs]
    fake = [[f[n_real:] for f in maps] for maps in outputs]
    return real, fake

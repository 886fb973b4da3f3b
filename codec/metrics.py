"""Reconstruction and codebook metrics shared by training validation and the evaluation job.

The spectral distances are the training losses themselves (:class:`codec.nn.loss.MultiScaleMelLoss`,
:class:`codec.nn.loss.MultiResolutionSTFTLoss`, built with their default settings), so a validation or
evaluation number is the same quantity the generator minimises. Lower is better for both; SI-SDR is in dB
(higher is better); codebook usage is the fraction of codes seen per RVQ layer and perplexity is
``exp(entropy)`` of the code histogram (1 = one code used, ``codebook_size`` = uniform use).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from codec.nn.loss import MultiResolutionSTFTLoss, MultiScaleMelLoss

MEL_DISTANCE = "mel_distance"
STFT_DISTANCE = "stft_distance"
SI_SDR = "si_sdr"
METRIC_NAMES = (MEL_DISTANCE, STFT_DISTANCE, SI_SDR)
LOWER_IS_BETTER = {MEL_DISTANCE: True, STFT_DISTANCE: True, SI_SDR: False, "visqol": False}


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB (both signals made zero-mean first).

    Args:
        estimate: [..., N] reconstruction.
        reference: [..., N] original, same shape.
        eps: numerical floor of the energies.

    Returns:
        Tensor: [...] SI-SDR per signal (dB); higher is better.
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ")
    x = estimate.double() - estimate.double().mean(dim=-1, keepdim=True)
    y = reference.double() - reference.double().mean(dim=-1, keepdim=True)
    scale = (x * y).sum(-1, keepdim=True) / ((y * y).sum(-1, keepdim=True) + eps)
    target = scale * y
    noise = x - target
    ratio = ((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps)
    return (10 * torch.log10(ratio)).float()


class ReconstructionMetrics(nn.Module):
    """Mel distance, STFT distance and SI-SDR of reconstructions against their originals.

    Args:
        sample_rate: audio rate in Hz; the mel filterbanks are built for it (24000 for this codec).
    """

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.mel = MultiScaleMelLoss(self.sample_rate)
        self.stft = MultiResolutionSTFTLoss()

    @torch.no_grad()
    def forward(self, estimate: Tensor, reference: Tensor) -> dict[str, Tensor]:
        """Per-item metrics.

        Args:
            estimate: [B, 1, N] (or [B, N]) reconstruction at :attr:`sample_rate`.
            reference: same shape, the original.

        Returns:
            dict: ``mel_distance``, ``stft_distance``, ``si_sdr`` -> float Tensor [B] each.
        """
        if estimate.shape != reference.shape:
            raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ")
        out: dict[str, list[Tensor]] = {name: [] for name in METRIC_NAMES}
        for x, y in zip(estimate.float(), reference.float(), strict=True):  # the losses average over the batch
            out[MEL_DISTANCE].append(self.mel(x[None], y[None]))
            out[STFT_DISTANCE].append(self.stft(x[None], y[None]))
            out[SI_SDR].append(si_sdr(x.reshape(-1), y.reshape(-1)))
        return {k: torch.stack(v).float().cpu() for k, v in out.items()}


def codebook_counts(codes: Tensor, codebook_size: int) -> Tensor:
    """Histogram of codes per RVQ layer.

    Args:
        codes: [B, K, T] or [K, T] integer codes; negative values (batch padding) are ignored.
        codebook_size: codes per layer.

    Returns:
        Tensor: int64 [K, codebook_size].
    """
    c = codes.long()
    if c.dim() == 2:
        c = c[None]
    rows = []
    for k in range(c.shape[1]):
        layer = c[:, k].reshape(-1)
        layer = layer[(layer >= 0) & (layer < codebook_size)]
        rows.append(torch.bincount(layer.cpu(), minlength=codebook_size))
    return torch.stack(rows) if rows else torch.zeros(0, codebook_size, dtype=torch.long)


def codebook_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Usage fraction and perplexity per layer from code counts.

    Args:
        counts: [K, codebook_size] occurrences of each code per RVQ layer.

    Returns:
        (usage [K] in [0, 1], perplexity [K] in [1, codebook_size]); perplexity is 1 for an empty layer.
    """
    counts = torch.as_tensor(counts).double()
    usage = (counts > 0).double().mean(dim=1)
    p = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    entropy = -(p * p.clamp(min=1e-12).log()).sum(dim=1)
    return usage.float(), entropy.exp().float()


def bitrate(n_q: int, frame_rate: float, codebook_size: int) -> float:
    """Bits per second of ``n_q`` RVQ layers at ``frame_rate`` frames/s (250 bps per layer at 25 x 1024)."""
    return n_q * frame_rate * math.log2(codebook_size)

"""codec.metrics: SI-SDR, spectral distances (the training losses), codebook usage/perplexity, bitrate."""

from __future__ import annotations

import math

import pytest
import torch

from codec.metrics import (
    ReconstructionMetrics,
    bitrate,
    codebook_counts,
    codebook_stats,
    si_sdr,
)
from codec.nn.loss import MultiResolutionSTFTLoss, MultiScaleMelLoss


def test_si_sdr_is_scale_invariant_and_matches_known_noise_level():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 24000, generator=g)
    assert float(si_sdr(y, y).min()) > 60
    noise = torch.randn(2, 24000, generator=g)
    noise = noise / noise.norm(dim=-1, keepdim=True) * y.norm(dim=-1, keepdim=True) / math.sqrt(10)  # 10 dB
    assert torch.allclose(si_sdr(y + noise, y), torch.full((2,), 10.0), atol=0.3)
    assert torch.allclose(si_sdr(0.3 * (y + noise), y), si_sdr(y + noise, y), atol=1e-4)
    with pytest.raises(ValueError):
        si_sdr(y[:, :10], y)


def test_reconstruction_metrics_are_the_training_losses_per_item():
    torch.manual_seed(0)
    ref = torch.randn(3, 1, 9600) * 0.1
    est = ref + 0.05 * torch.randn(3, 1, 9600)
    est[1] = ref[1]  # a perfect item
    m = ReconstructionMetrics(24000)
    out = m(est, ref)
    assert set(out) == {"mel_distance", "stft_distance", "si_sdr"} and all(v.shape == (3,) for v in out.values())
    mel, stft = MultiScaleMelLoss(24000), MultiResolutionSTFTLoss()
    for i in range(3):
        assert out["mel_distance"][i] == pytest.approx(float(mel(est[i:i + 1], ref[i:i + 1])), rel=1e-5)
        assert out["stft_distance"][i] == pytest.approx(float(stft(est[i:i + 1], ref[i:i + 1])), rel=1e-5)
    assert float(out["mel_distance"][1]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["mel_distance"][0]) > 0.01
    assert m.mel.sample_rate == 24000


def test_codebook_counts_ignore_padding_and_stats():
    codes = torch.tensor([[[0, 1, 2, 3], [5, 5, 5, -1]]])  # [B=1, K=2, T=4]
    counts = codebook_counts(codes, 8)
    assert counts.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 3, 0, 0]]
    usage, perplexity = codebook_stats(counts)
    assert usage.tolist() == [0.5, 0.125]
    assert perplexity[0] == pytest.approx(4.0) and perplexity[1] == pytest.approx(1.0)
    assert codebook_stats(torch.zeros(1, 8))[1].tolist() == [1.0]


def test_bitrate_is_250_bps_per_layer():
    assert [bitrate(q, 25.0, 1024) for q in (1, 2, 4, 8)] == [250.0, 500.0, 1000.0, 2000.0]

"""Is the codec learning? Per-layer code usage, identification, the constant-codes baseline, collapse checks.

A collapsed RVQ (every layer emitting one code whatever the input) still lowers the mel distance: the
decoder learns one average sound. These measures see it:

* codes used and perplexity per layer (:func:`codec.metrics.codebook_stats`);
* identification accuracy: the reconstruction of excerpt i is closer (mel distance) to excerpt i than to
  every other excerpt (a collapsed codec scores ~1/N);
* the constant-codes baseline: the decoder fed one fixed code per layer (the most frequent one), i.e. the
  best a codec whose codes carry nothing can do;
* :func:`collapsed_layers`: layers whose perplexity fell below a floor.

Everything is pure torch and works on any :class:`codec.model.xcodec.XCodec`; training validation calls
:func:`evaluate_learning` on a fixed batch of held-out excerpts and their teacher features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from codec.metrics import codebook_counts, codebook_stats, si_sdr
from codec.nn.loss import MultiScaleMelLoss

DEFAULT_N_QS = (1, 2, 4, 8)


@dataclass
class LearningReport:
    """What :func:`evaluate_learning` measured on N excerpts.

    Attributes:
        codes_used: [K] distinct codes seen per RVQ layer.
        usage: [K] ``codes_used / codebook_size``.
        perplexity: [K] exp(entropy) of each layer's code histogram.
        mel: n_q -> mean mel distance of the reconstructions.
        si_sdr: n_q -> mean SI-SDR (dB).
        identification: n_q -> fraction of excerpts whose reconstruction is nearest (mel) to its own original.
        dc_offset: n_q -> mean |mean over time| of the reconstructions (the originals' is ~0.001; no loss sees DC).
        level: n_q -> RMS of the reconstructions without their DC over the originals' RMS (1 = as loud).
        constant_mel: mean mel distance of the constant-codes baseline (all K layers).
        n_excerpts: N.
    """

    codes_used: list[int]
    usage: list[float]
    perplexity: list[float]
    mel: dict[int, float] = field(default_factory=dict)
    si_sdr: dict[int, float] = field(default_factory=dict)
    identification: dict[int, float] = field(default_factory=dict)
    dc_offset: dict[int, float] = field(default_factory=dict)
    level: dict[int, float] = field(default_factory=dict)
    constant_mel: float = float("nan")
    n_excerpts: int = 0

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``name -> value`` dict for MLflow (layers numbered from 1, e.g. ``perplexity_l1``)."""
        out: dict[str, float] = {}
        for k, (used, usage, ppl) in enumerate(zip(self.codes_used, self.usage, self.perplexity, strict=True), 1):
            out[f"{prefix}codes_used_l{k}"] = float(used)
            out[f"{prefix}usage_l{k}"] = float(usage)
            out[f"{prefix}perplexity_l{k}"] = float(ppl)
        for n_q in self.mel:
            out[f"{prefix}mel_nq{n_q}"] = self.mel[n_q]
            out[f"{prefix}si_sdr_nq{n_q}"] = self.si_sdr[n_q]
            out[f"{prefix}identification_nq{n_q}"] = self.identification[n_q]
            out[f"{prefix}dc_offset_nq{n_q}"] = self.dc_offset[n_q]
            out[f"{prefix}level_nq{n_q}"] = self.level[n_q]
        out[f"{prefix}constant_codes_mel"] = self.constant_mel
        return out


def identification_accuracy(distances: Tensor) -> float:
    """Fraction of rows whose diagonal entry is strictly the smallest.

    Args:
        distances: [N, N]; entry [i, j] = distance of reconstruction i to original j.

    Returns:
        float in [0, 1] (a codec whose output ignores its input scores about 1/N).
    """
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be a square [N, N] matrix, got {tuple(distances.shape)}")
    diag = distances.diagonal()
    others = distances + torch.diag(torch.full_like(diag, float("inf")))
    return float((diag < others.min(dim=1).values).float().mean())


def most_frequent_codes(codes: Tensor, codebook_size: int) -> Tensor:
    """The most frequent code of each layer. codes [B, K, T] -> [K] int64."""
    return codebook_counts(codes, codebook_size).argmax(dim=1)


def collapsed_layers(perplexity: Tensor | list[float], floor: float) -> list[int]:
    """Layers (numbered from 1) whose perplexity is below ``floor``; empty when none collapsed.

    Args:
        perplexity: [K] per-layer perplexity (:func:`codec.metrics.codebook_stats`).
        floor: the smallest healthy perplexity (e.g. 2.0: a layer using about one code has perplexity 1).
    """
    return [k for k, p in enumerate(torch.as_tensor(perplexity).tolist(), 1) if p < floor]


@torch.no_grad()
def evaluate_learning(generator: nn.Module, audio: Tensor, semantic: Tensor, n_qs: tuple[int, ...] = DEFAULT_N_QS,
                      mel: MultiScaleMelLoss | None = None, reference_mels: list[Tensor] | None = None,
                      batch_size: int = 4) -> LearningReport:
    """Encode excerpts, decode them at several prefixes and measure whether the codes carry the music.

    The generator runs in eval mode (restored afterwards). Prefixes above its layer count are skipped; with
    ``n_qs=()`` only the codes are measured (encoder only: the cheap check for a collapse).

    Args:
        generator: an XCodec (``encode``, ``decode``, ``codebook_size``, ``sample_rate``, ``n_codebooks``).
        audio: [N, 1, S] excerpts, S % hop_length == 0, N >= 2.
        semantic: [N, S / hop_length, Ds] their teacher features.
        n_qs: RVQ prefixes to decode.
        mel: the mel distance to use (``MultiScaleMelLoss(generator.sample_rate)`` when None).
        reference_mels: ``mel.spectrograms(audio)``, to reuse across calls on the same excerpts.
        batch_size: excerpts per encode / decode call.

    Returns:
        LearningReport (mel, SI-SDR and identification empty when ``n_qs`` is empty).
    """
    if audio.shape[0] < 2:
        raise ValueError("identification needs at least 2 excerpts")
    mel = mel or MultiScaleMelLoss(generator.sample_rate).to(audio.device)
    was_training = generator.training
    generator.eval()
    try:
        chunks = range(0, audio.shape[0], batch_size)
        codes = torch.cat([generator.encode(audio[i:i + batch_size], semantic[i:i + batch_size]) for i in chunks])
        counts = codebook_counts(codes, generator.codebook_size)
        usage, perplexity = codebook_stats(counts)
        report = LearningReport(codes_used=(counts > 0).sum(dim=1).tolist(), usage=usage.tolist(),
                                perplexity=perplexity.tolist(), n_excerpts=int(audio.shape[0]))
        n_qs = tuple(n for n in n_qs if n <= generator.n_codebooks)
        if not n_qs:
            return report
        reference_mels = reference_mels or mel.spectrograms(audio)
        for n_q in n_qs:
            recon = torch.cat([generator.decode(codes[i:i + batch_size, :n_q]) for i in chunks])
            distances = mel.pairwise(recon, reference_mels)
            report.mel[n_q] = float(distances.diagonal().mean())
            report.si_sdr[n_q] = float(si_sdr(recon.reshape(len(recon), -1), audio.reshape(len(audio), -1)).mean())
            report.identification[n_q] = identification_accuracy(distances)
            offsets = recon.mean(dim=-1, keepdim=True)
            report.dc_offset[n_q] = float(offsets.abs().mean())
            report.level[n_q] = float((recon - offsets).pow(2).mean().sqrt() / audio.pow(2).mean().sqrt())
        constant = most_frequent_codes(codes, generator.codebook_size)
        baseline = generator.decode(constant[None, :, None].expand(1, -1, codes.shape[-1]))
        report.constant_mel = float(mel.pairwise(baseline, reference_mels).mean())
    finally:
        generator.train(was_training)
    return report

"""Evaluation of tracks: reconstruct at several ``n_q`` (and through Opus) and measure every setting.

:class:`TrackEvaluator` works on one decoded track, without Ray. :class:`ShardEvaluator` is the Ray Data
actor-pool stage: one call = one WebDataset shard of whole tracks; a track that cannot be decoded or
evaluated is skipped with its reason, never fatal. Rows carry JSON (per-track metrics, skipped tracks,
code histogram) and, for the shard asked to, FLAC audio examples.

Used as ``ds.map_batches(ShardEvaluator, batch_size=1, compute=ray.data.ActorPoolStrategy(size=N),
fn_constructor_kwargs=...)`` on a dataset of ``{"shard": url, "examples": int}`` rows.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from codec.audio import resample, to_mono
from codec.metrics import ReconstructionMetrics, codebook_counts
from pipelines.common import shard_io as tio
from pipelines.common.audio_decode import DUPLICATE_KEY, Skip, decode_bytes, error_message, find_audio
from pipelines.common.storage import StorageConfig
from pipelines.common.torch_thread import TorchThread
from pipelines.evaluate.tools import OpusEncoder, Visqol

logger = logging.getLogger(__name__)

TOO_SHORT = "too_short"
SILENT = "silent"
FAILED = "evaluation_failed"
ROW_KEYS = ("shard", "ok", "error", "result")


def codec_setting(n_q: int) -> str:
    """Setting name of the codec with ``n_q`` layers: ``codec_q4``."""
    return f"codec_q{n_q}"


def opus_setting(kbps: float) -> str:
    """Setting name of the Opus baseline at ``kbps``: ``opus_6kbps``."""
    return f"opus_{kbps:g}kbps"


@dataclass
class TrackResult:
    """Metrics of one track: ``settings`` maps a setting name to ``{metric: value}``."""

    key: str
    seconds: float
    settings: dict[str, dict[str, float]]
    counts: np.ndarray  # int64 [n_codebooks, codebook_size]
    audio: dict[str, np.ndarray] | None = None  # setting -> float32 [N] (examples only), plus "original"


class TrackEvaluator:
    """Reconstruct one track at every ``n_q`` (encode once with all layers, decode prefixes) and through Opus.

    Args:
        codec: a loaded :class:`codec.inference.Codec`.
        n_q: layer counts to evaluate.
        opus: Opus encoder for the baseline (None = no baseline).
        opus_kbps: baseline target bitrates.
        visqol: ViSQOL scorer (None = not computed).
        max_seconds: evaluate only the first ``max_seconds`` of a track.
        min_seconds: shorter tracks are skipped.
    """

    def __init__(self, codec: Any, n_q: list[int], opus: OpusEncoder | None = None,
                 opus_kbps: list[float] | None = None, visqol: Visqol | None = None,
                 max_seconds: float | None = None, min_seconds: float = 0.5):
        bad = [q for q in n_q if not 1 <= q <= codec.n_codebooks]
        if bad:
            raise ValueError(f"metrics.n_q {bad} out of range 1..{codec.n_codebooks} for this model")
        self.codec = codec
        self.sample_rate = codec.sample_rate
        self.n_q = sorted(n_q)
        self.opus = opus
        self.opus_kbps = list(opus_kbps or []) if opus is not None else []
        self.visqol = visqol
        self.max_seconds = max_seconds
        self.min_seconds = min_seconds
        self.metrics = ReconstructionMetrics(self.sample_rate)

    def prepare(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor | Skip:
        """Mono 24 kHz reference [N] (cut to ``max_seconds``), or a Skip (too short, silent)."""
        x = resample(to_mono(torch.from_numpy(np.ascontiguousarray(audio, np.float32))), sample_rate,
                     self.sample_rate)
        if self.max_seconds is not None:
            x = x[:int(round(self.max_seconds * self.sample_rate))]
        seconds = x.shape[-1] / self.sample_rate
        if seconds < max(self.min_seconds, self.codec.hop_length / self.sample_rate):
            return Skip(TOO_SHORT, f"{seconds:.3f} s < {self.min_seconds} s")
        if float(x.abs().max()) < 1e-5:
            return Skip(SILENT, "peak below -100 dBFS")
        return x

    def score(self, estimate: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
        """Every metric of one reconstruction ([N] each)."""
        m = {k: float(v[0]) for k, v in self.metrics(estimate[None, None], reference[None, None]).items()}
        if self.visqol is not None:
            m["visqol"] = self.visqol.score(estimate.numpy(), reference.numpy(), self.sample_rate)
        return m

    def evaluate(self, key: str, audio: np.ndarray, sample_rate: int, keep_audio: bool = False
                 ) -> TrackResult | Skip:
        """Evaluate one track.

        Args:
            key: track id.
            audio: float32 [C, N] at ``sample_rate``.
            sample_rate: Hz.
            keep_audio: also return the original and every reconstruction (for audio examples).
        """
        ref = self.prepare(audio, sample_rate)
        if isinstance(ref, Skip):
            return ref
        n = ref.shape[-1]
        codes = self.codec.encode(ref, self.sample_rate)  # [1, n_codebooks, T], all layers
        counts = codebook_counts(codes, self.codec.codebook_size).numpy()
        settings: dict[str, dict[str, float]] = {}
        kept: dict[str, np.ndarray] = {"original": ref.numpy()} if keep_audio else {}
        for q in self.n_q:
            est = self.codec.decode(codes[:, :q].long())[0, 0, :n]
            est = torch.nn.functional.pad(est, (0, n - est.shape[-1]))
            settings[codec_setting(q)] = self.score(est, ref)
            if keep_audio:
                kept[codec_setting(q)] = est.numpy()
        for kbps in self.opus_kbps:
            decoded, size = self.opus.roundtrip(ref.numpy(), self.sample_rate, kbps)
            est = torch.from_numpy(decoded)
            m = self.score(est, ref)
            m["file_kbps"] = size * 8 / (n / self.sample_rate) / 1000
            settings[opus_setting(kbps)] = m
            if keep_audio:
                kept[opus_setting(kbps)] = decoded
        return TrackResult(key, n / self.sample_rate, settings, counts, kept or None)


def flac_b64(audio: np.ndarray, sample_rate: int) -> str:
    """Base64 of a 16-bit FLAC of mono float audio (clipped to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


class ShardEvaluator:
    """Actor-pool stage: one shard per row -> one row of JSON results.

    Args:
        model: :meth:`pipelines.common.models.ModelRef.to_json` of the pinned model.
        n_q: layer counts.
        opus_backend: "libsndfile", "ffmpeg" or None (no baseline).
        opus_kbps: baseline bitrates.
        visqol: compute ViSQOL.
        max_seconds, min_seconds: see :class:`TrackEvaluator`.
        max_tracks: at most this many tracks per shard (in shard order).
        example_seconds: length of audio examples.
        device: "auto", "cpu" or "cuda".
        torch_threads: intra-op threads (None leaves torch's default).
        mlflow_uri: tracking/registry URI for ``models:/`` and ``runs:/`` loads.
        storage: resolved ``s3://`` settings.
    """

    def __init__(self, model: dict[str, Any], n_q: list[int], opus_backend: str | None = None,
                 opus_kbps: list[float] | None = None, visqol: bool = False, max_seconds: float | None = None,
                 min_seconds: float = 0.5, max_tracks: int | None = None, example_seconds: float = 10.0,
                 device: str = "auto", torch_threads: int | None = None, mlflow_uri: str | None = None,
                 storage: StorageConfig | None = None):
        from pipelines.common.models import load_pinned_codec
        from pipelines.evaluate.tools import FFMPEG_KBPS, LIBSNDFILE_KBPS

        self.torch_thread = TorchThread()  # the model loads, and every shard is evaluated, on this one thread
        codec, device = self.torch_thread.run(load_pinned_codec, model, device, torch_threads, mlflow_uri)
        opus = None
        if opus_backend is not None:
            opus = OpusEncoder(opus_backend, *(LIBSNDFILE_KBPS if opus_backend == "libsndfile" else FFMPEG_KBPS))
        self.evaluator = TrackEvaluator(codec, n_q, opus, opus_kbps, Visqol() if visqol else None,
                                        max_seconds, min_seconds)
        self.max_tracks = max_tracks
        self.example_seconds = example_seconds
        self.storage = storage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.torch_thread.run(self.evaluate_shard, str(url), int(ex))
                for url, ex in zip(batch["shard"], batch["examples"], strict=True)]
        return {k: np.array([r[k] for r in rows], dtype=object) for k in ROW_KEYS}

    def evaluate_shard(self, url: str, examples: int = 0) -> dict[str, Any]:
        """Evaluate the tracks of one shard; returns a row (see ``ROW_KEYS``) whose ``result`` is JSON."""
        name = tio.shard_name(url)
        tracks: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        audio: dict[str, dict[str, str]] = {}
        counts = None
        seen: set[str] = set()
        sr = self.evaluator.sample_rate
        try:
            with tio.open_read(url, self.storage) as f:
                for sample in tio.iter_samples(f):
                    key = sample["__key__"]
                    if self.max_tracks is not None and len(seen) >= self.max_tracks:
                        break
                    if key in seen:
                        skipped.append({"key": key, "shard": name, "reason": DUPLICATE_KEY})
                        continue
                    seen.add(key)
                    found = find_audio(sample)
                    decoded = found if isinstance(found, Skip) else decode_bytes(found[1])
                    if isinstance(decoded, Skip):
                        skipped.append({"key": key, "shard": name, "reason": decoded.message})
                        continue
                    keep = len(audio) < examples
                    try:
                        r = self.evaluator.evaluate(key, decoded[0], decoded[1], keep_audio=keep)
                    except Exception as e:  # noqa: BLE001  (one bad track must not stop the shard)
                        logger.warning("track %s of %s failed: %s", key, name, error_message(e))
                        r = Skip(FAILED, error_message(e))
                    if isinstance(r, Skip):
                        skipped.append({"key": key, "shard": name, "reason": r.message})
                        continue
                    tracks.append({"key": key, "shard": name, "seconds": r.seconds, "settings": r.settings})
                    counts = r.counts if counts is None else counts + r.counts
                    if r.audio:
                        n = int(round(self.example_seconds * sr))
                        audio[key] = {s: flac_b64(a[:n], sr) for s, a in r.audio.items()}
        except Exception as e:  # noqa: BLE001  (an unreadable shard is reported, the others go on)
            return {"shard": name, "ok": False, "error": f"cannot read {url}: {error_message(e)}",
                    "result": json.dumps({"tracks": tracks, "skipped": skipped})}
        result = {"tracks": tracks, "skipped": skipped, "counts": None if counts is None else counts.tolist(),
                  "examples": audio}
        return {"shard": name, "ok": True, "error": "", "result": json.dumps(result)}

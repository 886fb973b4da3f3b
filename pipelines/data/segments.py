"""Random fixed-length training segments from encoded audio, decoding only the windows it needs.

A 1-hour track never becomes a 1-hour float tensor: each segment seeks to its window in the encoded
stream, reads it (plus a little resampling context), downmixes to mono and resamples to the target rate.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from codec.config import hop_length, load_codec_config
from pipelines.common.audio_decode import (
    NONFINITE,
    SILENT,
    TOO_SHORT,
    TRUNCATED,
    Skip,
    open_audio,
    read_frames,
)

_CONTEXT = 64  # source frames of resampling context on each side of a window


@functools.cache
def frame_hop() -> int:
    """Samples per code frame, from the codec config (every valid codec config shares the MuQ teacher's
    frame grid, which ``codec.config.validate_codec_config`` enforces, so the shipped preset speaks for all)."""
    return hop_length(load_codec_config())


def segment_samples(seconds: float, sample_rate: int = 24000, hop: int | None = None) -> int:
    """Segment length in samples: ``seconds`` rounded down to whole codec frames (at least one frame)."""
    hop = hop or frame_hop()
    return max(hop, int(seconds * sample_rate) // hop * hop)


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")


def key_fraction(key: str) -> float:
    """Deterministic position of a key in [0, 1), used for the train / validation split."""
    return stable_hash("split:" + key) / 2.0**64


@dataclass(frozen=True)
class SegmentSpec:
    """How segments are cut.

    Attributes:
        length: segment length in target samples (whole codec frames).
        sample_rate: target rate (24 kHz).
        per_track: at most this many segments per track (fewer for tracks shorter than
            ``per_track * length``: ``min(per_track, duration // length)``, at least 1).
        silence_db: a segment whose RMS is below this (dBFS) is silent and redrawn.
        max_tries: draws per wanted segment before the track gives up.
        seed: base seed; segment offsets depend on (seed, epoch, key) only.
    """

    length: int
    sample_rate: int = 24000
    per_track: int = 4
    silence_db: float = -60.0
    max_tries: int = 3
    seed: int = 0


def _rms_db(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(max(rms, 1e-12))


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    """``torchaudio.functional.resample`` (float32, defaults) for one rate pair with its sinc kernel built
    once per process instead of on every call; the output is bit-identical (the same kernel and kernel
    application; ``transforms.Resample`` builds its kernel in float64 and differs by ~1e-5).
    torch is imported here, not at module import, so processes that never resample never load it."""
    import math

    import torch
    from torchaudio.functional.functional import _apply_sinc_resample_kernel, _get_sinc_resample_kernel

    gcd = math.gcd(orig, new)
    kernel, width = _get_sinc_resample_kernel(orig, new, gcd, dtype=torch.float32)
    return lambda x: _apply_sinc_resample_kernel(x, orig, new, gcd, kernel, width)


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new:
        return x
    import torch

    with torch.inference_mode():
        return _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _mono(window: np.ndarray) -> np.ndarray | None:
    """Channel mean of a [n, C] float32 window, or None when the window holds a non-finite value.

    Equal to ``window.mean(axis=1, dtype=float32)`` (for 1 and 2 channels the sum is exact and the
    division by 1 or 2 is too); finiteness is checked on the mix (NaN/Inf propagate through the sum) and only
    a non-finite mix, which an overflow could also cause, checks every sample."""
    C = window.shape[1]
    if C == 1:
        y = window[:, 0].copy()
    elif C == 2:
        y = window[:, 0] + window[:, 1]
        y *= np.float32(0.5)
    else:
        y = window.mean(axis=1, dtype=np.float32)
    if not np.isfinite(y).all() and not np.isfinite(window).all():
        return None
    return y


def cut_segments(data: bytes, key: str, spec: SegmentSpec, epoch: int = 0) -> list[tuple[int, np.ndarray]] | Skip:
    """Draw random mono segments from one encoded track.

    Args:
        data: encoded audio bytes (any libsndfile format).
        key: sample key (seeds the offsets).
        spec: segment geometry and thresholds.
        epoch: mixed into the seed so each epoch sees other offsets.

    Returns:
        ``[(start, audio float32 [length])]`` sorted by start (in target samples), or a Skip when no
        segment survives (``too_short``, ``silent``, ``nonfinite``, ``truncated`` or a decode error).
    """
    opened = open_audio(data)
    if isinstance(opened, Skip):
        return opened
    f, info = opened
    handle = [f]

    def reopen() -> None:  # a decoder error can leave the stream unusable
        handle[0].close()
        handle[0] = open_audio(data)[0]

    def read(start: int, count: int) -> np.ndarray:
        window = read_frames(handle[0], start, count, block_frames=max(count, 1))  # one call per window
        if window.shape[0] == count:
            return window
        reopen()  # short: re-read in small blocks, which keeps everything decodable before the damage
        window = read_frames(handle[0], start, count)
        if window.shape[0] < count:
            reopen()
        return window

    try:
        return _draw(read, info.frames, info.sample_rate, key, spec, epoch)
    finally:
        handle[0].close()


def _draw(read, frames: int, sr: int, key: str, spec: SegmentSpec, epoch: int) -> list[tuple[int, np.ndarray]] | Skip:
    L, tr = spec.length, spec.sample_rate
    g = math.gcd(sr, tr)
    src_step, tgt_step = sr // g, tr // g  # offsets on this grid map exactly between the two rates
    margin = src_step * math.ceil(_CONTEXT / src_step)
    src_len = math.ceil(L * sr / tr)
    known = frames  # decodable source frames (shrinks when a truncated stream is discovered)
    if known * tr // sr < L:
        return Skip(TOO_SHORT, f"{frames / sr:.3f}s < {L / tr:.3f}s")
    wanted = min(spec.per_track, max(1, (known * tr // sr) // L))
    rng = np.random.default_rng([spec.seed, epoch, stable_hash(key) & 0xFFFFFFFF])
    out: list[tuple[int, np.ndarray]] = []
    failures: Counter[str] = Counter()
    for _ in range(wanted * spec.max_tries):
        if len(out) == wanted:
            break
        n_tgt = known * tr // sr
        if n_tgt < L:
            failures[TRUNCATED] += 1
            break
        t0 = int(rng.integers(0, n_tgt - L + 1)) // tgt_step * tgt_step
        s0 = t0 * sr // tr
        a = max(0, s0 - margin)
        b = min(known, s0 + src_len + margin)
        window = read(a, b - a)
        if window.shape[0] < min(b, s0 + src_len) - a:
            known = a + window.shape[0]  # the stream ends early: redraw inside what decodes
            failures[TRUNCATED] += 1
            continue
        mono = _mono(window)
        if mono is None:
            failures[NONFINITE] += 1
            continue
        y = _resample(mono, sr, tr)
        off = (s0 - a) * tr // sr
        seg = y[off:off + L]
        if seg.shape[0] < L:  # rounding at the very end of the stream
            seg = np.pad(seg, (0, L - seg.shape[0]))
        if _rms_db(seg) < spec.silence_db:
            failures[SILENT] += 1
            continue
        out.append((t0, np.ascontiguousarray(seg, dtype=np.float32)))
    if out:
        return sorted(out, key=lambda s: s[0])
    reason = failures.most_common(1)[0][0] if failures else TOO_SHORT
    return Skip(reason, ", ".join(f"{k}={v}" for k, v in sorted(failures.items())))

"""Decode audio members of WebDataset samples, with every bad-input case turned into a :class:`Skip`.

A sample is a dict as ``webdataset`` or ``ray.data.read_webdataset`` yields it: ``__key__`` plus one
entry per member suffix (``flac``, ``wav``, ``mp3``, ``ogg``, ``opus``, ``json``, ...). Nothing here
raises on bad data: callers get ``(audio, sample_rate)`` or a ``Skip(reason, detail)`` to count and log.

Skip reasons (stable strings, used in counts and ``rejected.jsonl``): see ``SKIP_REASONS``.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = ("flac", "wav", "mp3", "ogg", "opus")
"""Audio member suffixes, in order of preference when a sample has several."""

NO_AUDIO = "no_audio"  # the sample has no audio member (e.g. only .json / .txt)
EMPTY = "empty"  # zero-byte member or zero frames
UNDECODABLE = "undecodable"  # libsndfile cannot open or read it
NONFINITE = "nonfinite"  # NaN / Inf samples
TOO_SHORT = "too_short"  # shorter than one training segment
SILENT = "silent"  # every drawn segment is below the silence threshold
TRUNCATED = "truncated"  # the stream ends before its header says (only when nothing usable is left)
DUPLICATE_KEY = "duplicate_key"  # a key seen earlier in the same read task
NOT_A_FILE = "not_a_file"  # a directory, FIFO, socket, device, broken symlink or symlink loop with an audio name
SKIP_REASONS = (NO_AUDIO, EMPTY, UNDECODABLE, NONFINITE, TOO_SHORT, SILENT, TRUNCATED, DUPLICATE_KEY, NOT_A_FILE)

_BLOCK_FRAMES = 1 << 14  # small: a decode error loses the whole block being read


@dataclass(frozen=True)
class Skip:
    """Why a sample (or track) was skipped.

    Attributes:
        reason: one of ``SKIP_REASONS``.
        detail: a short human-readable message (never contains credentials).
    """

    reason: str
    detail: str = ""

    @property
    def message(self) -> str:
        """``"reason: detail"`` (or just the reason): how skips are reported in stats and markers."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio stream.

    Attributes:
        sample_rate: Hz.
        channels: channel count.
        frames: frames announced by the header (may exceed the decodable length of a truncated file).
        format: libsndfile major format, e.g. ``"FLAC"``.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes()
    return None


def find_audio(sample: dict[str, Any]) -> tuple[str, bytes] | Skip:
    """Pick the audio member of a sample.

    Args:
        sample: webdataset-style dict; suffix keys may be bare (``"flac"``) or dotted (``"x.flac"``).

    Returns:
        ``(suffix, raw bytes)`` of the preferred audio member, or ``Skip(NO_AUDIO)``.
    """
    by_suffix: dict[str, bytes] = {}
    for name, value in sample.items():
        if name.startswith("__"):
            continue
        suffix = name.rsplit(".", 1)[-1].lower()
        data = _as_bytes(value)
        if suffix in AUDIO_SUFFIXES and data is not None and suffix not in by_suffix:
            by_suffix[suffix] = data
    for suffix in AUDIO_SUFFIXES:
        if suffix in by_suffix:
            return suffix, by_suffix[suffix]
    members = sorted(k for k in sample if not k.startswith("__"))
    return Skip(NO_AUDIO, f"members {members}")


def open_audio(data: bytes) -> tuple[sf.SoundFile, AudioInfo] | Skip:
    """Open encoded audio bytes with libsndfile (format sniffed from the content, not the suffix).

    Returns:
        An open ``SoundFile`` (caller closes it) and its header, or a Skip (``EMPTY``/``UNDECODABLE``).
    """
    if not data:
        return Skip(EMPTY, "zero-byte member")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as exn:  # libsndfile raises several types; any of them means "cannot decode"
        return Skip(UNDECODABLE, error_message(exn))
    info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
    if info.frames <= 0:
        f.close()
        return Skip(EMPTY, "zero frames")
    if info.sample_rate <= 0 or info.channels <= 0:
        f.close()
        return Skip(UNDECODABLE, f"bad header sr={info.sample_rate} channels={info.channels}")
    return f, info


def wav_declared_frames(head: bytes) -> int | None:
    """Frames a RIFF/RIFX WAVE header declares in its ``data`` chunk (libsndfile silently clamps it to the file).

    Args:
        head: the file's first bytes, through the ``data`` chunk header (64 KiB covers real files).

    Returns:
        The declared frame count, or None: not a WAVE, no ``data`` header in ``head``, or a size left open
        (0 or 0xFFFFFFFF, as streaming writers and RF64 leave it).
    """
    if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "little" if head[:4] == b"RIFF" else "big"
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], order)
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], order)
        elif chunk == b"data":
            if size in (0, 0xFFFFFFFF) or block_align <= 0:
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def read_frames(f: sf.SoundFile, start: int, count: int, block_frames: int = _BLOCK_FRAMES) -> np.ndarray:
    """Read up to ``count`` frames from ``start`` as float32 [n, C]; stops early (no raise) on a broken stream.

    ``block_frames``: frames per read call (a decode error loses the block being read; larger blocks mean
    fewer calls into libsndfile)."""
    chunks: list[np.ndarray] = []
    got = 0
    try:
        f.seek(start)
        while got < count:
            block = f.read(min(block_frames, count - got), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            chunks.append(block)
            got += block.shape[0]
    except Exception:  # a truncated or corrupt stream: keep what decoded before the damage
        pass
    if not chunks:
        return np.zeros((0, f.channels), dtype=np.float32)
    return np.concatenate(chunks, axis=0)


def decode_bytes(data: bytes) -> tuple[np.ndarray, int] | Skip:
    """Decode a whole audio stream.

    A truncated stream keeps its decodable prefix (logged); nothing decodable is ``TRUNCATED``.

    Returns:
        ``(audio float32 [C, N], sample_rate)`` or a Skip.
    """
    opened = open_audio(data)
    if isinstance(opened, Skip):
        return opened
    f, info = opened
    with f:
        audio = read_frames(f, 0, info.frames)
    if audio.shape[0] == 0:
        return Skip(TRUNCATED, f"no decodable frames of {info.frames}")
    if audio.shape[0] < info.frames:
        logger.warning("truncated stream: decoded %d of %d frames", audio.shape[0], info.frames)
    if not np.isfinite(audio).all():
        return Skip(NONFINITE, f"{int((~np.isfinite(audio)).sum())} non-finite values")
    return np.ascontiguousarray(audio.T), info.sample_rate


def decode_sample(sample: dict[str, Any]) -> tuple[np.ndarray, int] | Skip:
    """Decode the audio member of a WebDataset sample (any of ``AUDIO_SUFFIXES``).

    Args:
        sample: dict with ``__key__`` and member bytes keyed by suffix.

    Returns:
        ``(audio float32 [C, N], sample_rate)`` at the source rate and channel count, or a
        :class:`Skip` with the reason (no audio member, empty, undecodable, truncated, non-finite).
    """
    found = find_audio(sample)
    if isinstance(found, Skip):
        return found
    return decode_bytes(found[1])


def error_message(exn: BaseException) -> str:
    """A short, reproducible error text (object addresses removed)."""
    text = re.sub(r" ?<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(exn)).strip()
    return f"{type(exn).__name__}: {text[:200]}"

"""Corpus preparation, the worker side: find the source files and transcode each into a sample.

Each sample is ``KEY.flac`` (the source audio at its own rate and channel count: bit-exact for integer PCM,
24-bit for lossy sources) or ``KEY.wav`` (float PCM sources, bit-exact) and ``KEY.json`` (source, sample
rate, channels, frames, duration, what was changed, SHA-256 of the source bytes). :class:`TranscodeStage`
runs in parallel on Ray Data; the driver (``pipelines.prepare.driver``) packs the results into shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from codec.preflight import explain_unreadable, non_regular_kind, unreadable_reason
from pipelines.common.audio_decode import (
    DUPLICATE_KEY,
    EMPTY,
    NONFINITE,
    NOT_A_FILE,
    TRUNCATED,
    UNDECODABLE,
    AudioInfo,
    Skip,
    error_message,
    wav_declared_frames,
)
from pipelines.common.shards import sample_key
from pipelines.common.storage import StorageConfig, filesystem_for, is_s3, strip_scheme

logger = logging.getLogger(__name__)

UNSUPPORTED = "unsupported"  # decodable, but FLAC cannot hold it (more than 8 channels, rate > 655350 Hz)
REJECTED = "rejected.jsonl"
_BLOCK = 1 << 14  # small: a decode error loses the whole block being read
_HEAD = 1 << 16  # bytes sniffed for the WAV header and for tag-only files
# Integer PCM sources keep their exact bits as FLAC, float PCM as float WAV; lossy sources are stored as 24-bit.
_FLOAT_SUBTYPES = {"FLOAT": "float32", "DOUBLE": "float64"}
_FLAC_SUBTYPE = {"PCM_S8": ("PCM_16", "int16"), "PCM_U8": ("PCM_16", "int16"), "PCM_16": ("PCM_16", "int16"),
                 "PCM_24": ("PCM_24", "int32")}


@dataclass(frozen=True)
class SourceFile:
    """One input file: its URI (absolute path or ``s3://``), path relative to the input root, and key."""

    uri: str
    relpath: str
    key: str


def list_sources(inputs: list[str], extensions: list[str], storage: StorageConfig | None = None
                 ) -> tuple[list[SourceFile], list[dict[str, Any]]]:
    """Find the input files, derive their keys and sort them by key.

    Args:
        inputs: folders (recursive), single files, or ``.txt`` lists of paths (relative entries are
            resolved against the list's folder).
        extensions: audio suffixes picked from folders.
        storage: S3 settings.

    Returns:
        ``(sources sorted by key, rejects)``; a key collision rejects every file after the first.
    """
    exts = {e.lower().lstrip(".") for e in extensions}
    found: list[tuple[str, str]] = []  # (bare path, base folder)
    for item in inputs:
        fs = filesystem_for(item, storage)
        bare = strip_scheme(item)
        if fs.isdir(bare):  # with folders named like audio files: rejected (not_a_file), never skipped silently
            found += [(p, bare.rstrip("/")) for p in fs.find(bare, withdirs=True)
                      if p.rstrip("/") != bare.rstrip("/") and p.rsplit(".", 1)[-1].lower() in exts]
        elif bare.endswith(".txt"):
            base = posixpath.dirname(bare)
            lines = fs.cat_file(bare).decode("utf-8").splitlines()
            paths = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
            paths = [strip_scheme(p) if ("://" in p or p.startswith("/")) else posixpath.join(base, p) for p in paths]
            common = posixpath.commonpath([posixpath.dirname(p) for p in paths]) if paths else base
            found += [(posixpath.normpath(p), common) for p in paths]
        else:
            found.append((bare, posixpath.dirname(bare)))
    s3 = any(is_s3(i) for i in inputs)
    bases = sorted({b for _, b in found})
    root = posixpath.commonpath(bases) if len(bases) > 1 else (bases[0] if bases else "")
    by_uri: dict[str, SourceFile] = {}
    for path, base in found:
        rel = posixpath.relpath(path, root if len(inputs) > 1 else base)
        uri = "s3://" + path.lstrip("/") if s3 else path
        by_uri.setdefault(uri, SourceFile(uri, rel, sample_key(rel)))
    sources, rejects, seen = [], [], set()
    for src in sorted(by_uri.values(), key=lambda s: (s.key, s.uri)):
        if src.key in seen:
            rejects.append({"key": src.key, "source": src.uri, "reason": DUPLICATE_KEY, "detail": "key collision"})
            continue
        seen.add(src.key)
        sources.append(src)
    return sources, rejects


def transcode(fileobj: Any) -> tuple[bytes, dict[str, Any]] | Skip:
    """Store an audio stream at its own rate and channel count, exactly where the format allows.

    Integer PCM (8/16/24-bit) becomes FLAC, bit-exact. Float PCM (32/64-bit) is stored as a float WAV with
    the source's subtype, bit-exact (FLAC holds integers only; float sources may exceed [-1, 1]). Lossy
    sources become 24-bit FLAC; decoded samples beyond [-1, 1] are clipped and counted (``clipped_samples``).
    A stream that ends before its header says (FLAC STREAMINFO, WAV ``data`` chunk) keeps its decodable prefix
    with ``"truncated": true`` and the header's ``declared_frames``.

    Args:
        fileobj: seekable binary file object of the source.

    Returns:
        ``(audio bytes, facts)`` with sample_rate, channels, frames, duration, source format, ``stored_as``
        (the member suffix: ``flac`` or ``wav``), ``stored_subtype``, ``truncated``, ``declared_frames``,
        ``clipped_samples``; or a Skip.
    """
    opened = _open_stream(fileobj)
    if isinstance(opened, Skip):
        return opened
    f, info, declared = opened
    if info.channels > 8 or info.sample_rate > 655350:
        f.close()
        return Skip(UNSUPPORTED, f"FLAC cannot store {info.channels} channels at {info.sample_rate} Hz")
    if info.subtype in _FLOAT_SUBTYPES:
        stored_as, subtype, dtype = "wav", info.subtype, _FLOAT_SUBTYPES[info.subtype]
    else:
        stored_as, (subtype, dtype) = "flac", _FLAC_SUBTYPE.get(info.subtype, ("PCM_24", "float32"))
    lossy = stored_as == "flac" and dtype == "float32"
    out = io.BytesIO()
    frames, clipped, truncated = 0, 0, False
    with f, sf.SoundFile(out, "w", info.sample_rate, info.channels, subtype, format=stored_as.upper()) as w:
        while True:
            try:
                block = f.read(_BLOCK, dtype=dtype, always_2d=True)
            except Exception:
                truncated = True
                break
            if block.shape[0] == 0:
                break
            if block.dtype.kind == "f":
                if not np.isfinite(block).all():
                    return Skip(NONFINITE, f"non-finite samples near frame {frames}")
                if lossy:
                    clipped += int(np.count_nonzero(np.abs(block) > 1.0))
                    block = np.clip(block, -1.0, 1.0)
            w.write(block)
            frames += block.shape[0]
    if frames == 0:
        return Skip(TRUNCATED if truncated else EMPTY, f"no decodable frames of {max(info.frames, declared)}")
    declared = max(info.frames, declared)
    if clipped:
        logger.warning("clipped %d decoded samples beyond [-1, 1] (lossy source)", clipped)
    if frames < declared:
        logger.warning("truncated source: %d of the %d frames its header declares", frames, declared)
    facts = {"sample_rate": info.sample_rate, "channels": info.channels, "frames": frames,
             "duration": round(frames / info.sample_rate, 6), "source_format": info.format,
             "source_subtype": info.subtype, "stored_as": stored_as, "stored_subtype": subtype,
             "truncated": truncated or frames < declared, "declared_frames": declared, "clipped_samples": clipped}
    return _without_peak_timestamp(out.getvalue()), facts


def _without_peak_timestamp(data: bytes) -> bytes:
    """libsndfile stamps a float WAV's PEAK chunk with the time of writing; zero it so shards are deterministic.

    PEAK chunk: ``b"PEAK"``, size (4), version (4), timestamp (4), then the peaks.
    """
    i = data.find(b"PEAK", 12, 512) if data[:4] == b"RIFF" else -1
    return data if i < 0 else data[:i + 12] + b"\0\0\0\0" + data[i + 16:]


def _open_stream(fileobj: Any) -> tuple[sf.SoundFile, AudioInfo, int] | Skip:
    """Open a source; also returns the frame count its WAV header declares (0 when not a WAV)."""
    head = fileobj.read(_HEAD)
    size = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(0)
    if not head:
        return Skip(EMPTY, "zero-byte file")
    try:
        f = sf.SoundFile(fileobj)
    except Exception as exn:
        explained = explain_unreadable(head, size)
        return Skip(EMPTY, explained) if explained else Skip(UNDECODABLE, unreadable_reason(head, size,
                                                                                            error_message(exn)))
    if f.frames <= 0:
        f.close()
        return Skip(EMPTY, explain_unreadable(head, size) or "zero frames")
    info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))
    return f, info, wav_declared_frames(head) or 0


class TranscodeStage:
    """Ray Data stage: a batch of source files -> FLAC + JSON members, or a reject row.

    Args:
        storage: S3 settings for ``s3://`` sources (resolved here, on the driver).
    """

    def __init__(self, storage: StorageConfig | None = None):
        self.storage = storage or StorageConfig()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("key", "member", "audio", "json", "duration", "reason", "detail")}
        for uri, rel, key in zip(batch["uri"], batch["relpath"], batch["key"], strict=True):
            result, sha = self._one(str(uri))
            out["key"].append(str(key))
            if isinstance(result, Skip):
                logger.warning("rejected %s: %s (%s)", key, result.reason, result.detail)
                out["member"].append("")
                out["audio"].append(b"")
                out["json"].append(b"")
                out["duration"].append(0.0)
                out["reason"].append(result.reason)
                out["detail"].append(result.detail)
                continue
            audio, facts = result
            meta = {"key": str(key), "source": str(uri), "relpath": str(rel), **facts, "sha256": sha}
            out["member"].append(facts["stored_as"])
            out["audio"].append(audio)
            out["json"].append(json.dumps(meta, sort_keys=True).encode("utf-8"))
            out["duration"].append(float(facts["duration"]))
            out["reason"].append("")
            out["detail"].append("")
        return out

    def _one(self, uri: str) -> tuple[tuple[bytes, dict[str, Any]] | Skip, str]:
        fs = filesystem_for(uri, self.storage)
        what = None if is_s3(uri) else non_regular_kind(uri)  # before open(): a FIFO would block it forever
        if what is not None:
            return Skip(NOT_A_FILE, f"{posixpath.basename(uri)} is {what}, not an audio file"), ""
        try:
            with fs.open(strip_scheme(uri) if is_s3(uri) else uri, "rb") as f:
                digest = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
                f.seek(0)
                return transcode(f), digest.hexdigest()
        except OSError as exn:
            return Skip(UNDECODABLE, f"cannot read source: {type(exn).__name__}"), ""


__all__ = ["SourceFile", "TranscodeStage", "list_sources", "transcode"]

"""Corpus preparation, the worker side: find the source files and transcode each into a sample.

Each sample is ``KEY.flac`` (the source audio at its own rate and channel count, re-encoded
losslessly where the source is integer PCM) and ``KEY.json`` (source, sample rate, channels, frames,
duration, SHA-256 of the source bytes). :class:`TranscodeStage` runs in parallel on Ray Data; the driver
(``pipelines.prepare.driver``) packs the results into shards.
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

from pipelines.common.audio_decode import (
    DUPLICATE_KEY,
    EMPTY,
    NONFINITE,
    TRUNCATED,
    UNDECODABLE,
    AudioInfo,
    Skip,
    error_message,
)
from pipelines.common.shards import sample_key
from pipelines.common.storage import StorageConfig, filesystem_for, is_s3, strip_scheme

logger = logging.getLogger(__name__)

UNSUPPORTED = "unsupported"  # decodable, but FLAC cannot hold it (more than 8 channels, rate > 655350 Hz)
REJECTED = "rejected.jsonl"
_BLOCK = 1 << 14  # small: a decode error loses the whole block being read
# Integer PCM sources keep their exact bits; lossy or float sources are stored as 24-bit.
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
        if fs.isdir(bare):
            found += [(p, bare.rstrip("/")) for p in fs.find(bare) if p.rsplit(".", 1)[-1].lower() in exts]
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
    """Re-encode an audio stream as FLAC at its own rate and channel count.

    Integer PCM (8/16/24-bit) is copied bit-exactly; float and lossy sources become 24-bit FLAC
    (clipped to [-1, 1]). A truncated stream keeps its decodable prefix (``"truncated": true``).

    Args:
        fileobj: seekable binary file object of the source.

    Returns:
        ``(flac bytes, facts)`` with sample_rate, channels, frames, duration, source format, or a Skip.
    """
    opened = _open_stream(fileobj)
    if isinstance(opened, Skip):
        return opened
    f, info = opened
    if info.channels > 8 or info.sample_rate > 655350:
        f.close()
        return Skip(UNSUPPORTED, f"FLAC cannot store {info.channels} channels at {info.sample_rate} Hz")
    subtype, dtype = _FLAC_SUBTYPE.get(info.subtype, ("PCM_24", "float32"))
    out = io.BytesIO()
    frames, truncated = 0, False
    with f, sf.SoundFile(out, "w", info.sample_rate, info.channels, subtype, format="FLAC") as w:
        while True:
            try:
                block = f.read(_BLOCK, dtype=dtype, always_2d=True)
            except Exception:
                truncated = True
                break
            if block.shape[0] == 0:
                break
            if dtype == "float32":
                if not np.isfinite(block).all():
                    return Skip(NONFINITE, f"non-finite samples near frame {frames}")
                block = np.clip(block, -1.0, 1.0)
            w.write(block)
            frames += block.shape[0]
    if frames == 0:
        return Skip(TRUNCATED if truncated else EMPTY, f"no decodable frames of {info.frames}")
    facts = {"sample_rate": info.sample_rate, "channels": info.channels, "frames": frames,
             "duration": round(frames / info.sample_rate, 6), "source_format": info.format,
             "source_subtype": info.subtype, "flac_subtype": subtype,
             "truncated": truncated or frames < info.frames}
    return out.getvalue(), facts


def _open_stream(fileobj: Any):
    head = fileobj.read(1)
    if not head:
        return Skip(EMPTY, "zero-byte file")
    fileobj.seek(0)
    try:
        f = sf.SoundFile(fileobj)
    except Exception as exn:
        return Skip(UNDECODABLE, error_message(exn))
    if f.frames <= 0:
        f.close()
        return Skip(EMPTY, "zero frames")
    return f, AudioInfo(int(f.samplerate), int(f.channels), int(f.frames), str(f.format), str(f.subtype))


class TranscodeStage:
    """Ray Data stage: a batch of source files -> FLAC + JSON members, or a reject row.

    Args:
        storage: S3 settings for ``s3://`` sources (resolved here, on the driver).
    """

    def __init__(self, storage: StorageConfig | None = None):
        self.storage = storage or StorageConfig()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("key", "flac", "json", "duration", "reason", "detail")}
        for uri, rel, key in zip(batch["uri"], batch["relpath"], batch["key"], strict=True):
            result, sha = self._one(str(uri))
            out["key"].append(str(key))
            if isinstance(result, Skip):
                logger.warning("rejected %s: %s (%s)", key, result.reason, result.detail)
                out["flac"].append(b"")
                out["json"].append(b"")
                out["duration"].append(0.0)
                out["reason"].append(result.reason)
                out["detail"].append(result.detail)
                continue
            flac, facts = result
            meta = {"key": str(key), "source": str(uri), "relpath": str(rel), **facts, "sha256": sha}
            out["flac"].append(flac)
            out["json"].append(json.dumps(meta, sort_keys=True).encode("utf-8"))
            out["duration"].append(float(facts["duration"]))
            out["reason"].append("")
            out["detail"].append("")
        return out

    def _one(self, uri: str) -> tuple[tuple[bytes, dict[str, Any]] | Skip, str]:
        fs = filesystem_for(uri, self.storage)
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

"""Deterministic WebDataset shards: sample keys, tar packing, shard rolling and the manifest.

Same samples in, byte-identical tars out: members are written in the given order with mtime 0,
uid/gid 0, empty owner names and mode 0644. Every shard is written atomically (see
:func:`pipelines.common.storage.write_bytes_atomic`), the manifest last.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pipelines.common.storage import join, read_bytes, write_bytes_atomic

MANIFEST = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(relpath: str, max_len: int = 96) -> str:
    """A stable, unique, dot-free WebDataset key from a path relative to the input root.

    ``"Rock/My Song.v2.mp3"`` -> ``"Rock__My_Song_v2_mp3-<8 hex>"``: path parts joined with ``__``,
    anything outside ``[A-Za-z0-9_-]`` replaced by ``_``, plus 8 hex digits of the SHA-1 of the exact
    relative path so two paths that sanitize alike still get different keys.

    Args:
        relpath: POSIX-style path relative to the input root (extension included).
        max_len: cap on the readable part (long paths are cut; the hash keeps them unique).
    """
    relpath = relpath.replace("\\", "/").strip("/")
    readable = "__".join(_UNSAFE.sub("_", part).strip("_") or "_" for part in relpath.split("/"))
    digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:8]
    return f"{readable[:max_len]}-{digest}"


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """Pack ``(name, data)`` members, in order, into a reproducible tar archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class ShardInfo:
    """One written shard: file name (relative to the output root), samples, seconds of audio, bytes."""

    path: str
    samples: int
    duration: float
    bytes: int


@dataclass
class ShardWriter:
    """Roll samples into ``{root}/{prefix}-{index:06d}.tar`` by sample count and byte size.

    Args:
        root: output folder or ``s3://bucket/prefix``.
        fs: filesystem of ``root``.
        prefix: shard file prefix.
        max_samples: start a new shard after this many samples.
        max_bytes: start a new shard before the tar would exceed this (a single larger sample still
            gets a shard of its own).
    """

    root: str
    fs: fsspec.AbstractFileSystem
    prefix: str = "shard"
    max_samples: int = 1000
    max_bytes: int = 256 * 2**20
    shards: list[ShardInfo] = field(default_factory=list)
    _members: list[tuple[str, bytes]] = field(default_factory=list)
    _count: int = 0
    _size: int = 0
    _duration: float = 0.0

    def add(self, key: str, members: list[tuple[str, bytes]], duration: float = 0.0) -> None:
        """Append one sample; ``members`` are ``(suffix, data)`` written as ``key.suffix``, adjacent."""
        size = sum(512 + (len(d) + 511) // 512 * 512 for _, d in members)
        if self._count and (self._count >= self.max_samples or self._size + size > self.max_bytes):
            self.flush()
        self._members.extend((f"{key}.{suffix}", data) for suffix, data in members)
        self._count += 1
        self._size += size
        self._duration += duration

    def flush(self) -> None:
        """Write the pending shard (if any) atomically."""
        if not self._count:
            return
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        data = tar_bytes(self._members)
        write_bytes_atomic(join(self.root, name), data, self.fs)
        self.shards.append(ShardInfo(name, self._count, round(self._duration, 6), len(data)))
        self._members, self._count, self._size, self._duration = [], 0, 0, 0.0

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """The manifest dict: shards, per-shard counts, totals, plus ``extra`` fields."""
        return {
            "shards": [vars(s) for s in self.shards],
            "num_shards": len(self.shards),
            "num_samples": sum(s.samples for s in self.shards),
            "total_duration": round(sum(s.duration for s in self.shards), 6),
            **extra,
        }


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys) so reruns produce identical files."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode("utf-8")


def write_manifest(root: str, manifest: dict[str, Any], fs: fsspec.AbstractFileSystem) -> None:
    """Write ``{root}/manifest.json`` atomically."""
    write_bytes_atomic(join(root, MANIFEST), dumps(manifest), fs)


def read_manifest(root: str, fs: fsspec.AbstractFileSystem) -> dict[str, Any] | None:
    """Load ``{root}/manifest.json``; ``None`` if there is none."""
    path = join(root, MANIFEST)
    try:
        return json.loads(read_bytes(path, fs))
    except FileNotFoundError:
        return None

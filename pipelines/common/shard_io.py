"""Token-shard storage: shard listing and naming, tar reading, deterministic tars, done markers.

Local or ``s3://`` through :mod:`pipelines.common.storage`. Layout of an output prefix::

    OUTPUT/NAME.tar           one per input shard NAME.tar: KEY.codes.npy + KEY.json per track (or NAME.parquet)
    OUTPUT/_done/NAME.json    done marker (shard summary), written LAST and atomically
    OUTPUT/manifest.json      model, config hash, one entry per shard
    OUTPUT/stats.json         tracks, hours, tokens, codebook usage/perplexity, skipped tracks
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

from pipelines.common import shards
from pipelines.common.storage import (
    StorageConfig,
    filesystem_for,
    is_s3,
    join,
    strip_scheme,
    write_bytes_atomic,
)

DONE_DIR = "_done"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")

__all__ = ["DONE_DIR", "StorageConfig", "done_url", "exists", "iter_samples", "join", "json_bytes", "list_shards", "check_output_names",
           "open_read", "read_bytes", "read_done", "remove", "shard_name", "tar_bytes",
           "write_atomic"]


def _fs_path(url: str, storage: StorageConfig | None) -> tuple[Any, str]:
    return filesystem_for(url, storage), strip_scheme(url)


def shard_name(path: str) -> str:
    """Output shard name of an input shard: ``a/b/train-000003.tar.gz`` -> ``train-000003.tar``."""
    base = posixpath.basename(path.rstrip("/"))
    for suf in SHARD_SUFFIXES:
        if base.endswith(suf):
            return base[: -len(suf)] + ".tar"
    return base


def list_shards(patterns: str | Sequence[str], storage: StorageConfig | None = None) -> list[str]:
    """The one shard lister: input shards of one pattern or several, sorted and de-duplicated.

    A pattern is a folder (the shards its ``manifest.json`` from ``jobs.prepare`` lists, else every tar under
    it), a glob, a brace pattern or one file, local or ``s3://``. Done markers and hidden files (``.tmp-*`` of
    an interrupted atomic write) are never shards.

    Returns:
        ``s3://`` URLs or absolute local paths.

    Raises:
        FileNotFoundError: nothing matches.
    """
    import braceexpand

    found: set[str] = set()
    for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
        fs = filesystem_for(pattern, storage)
        fs.invalidate_cache()
        for pat in braceexpand.braceexpand(pattern):
            bare = strip_scheme(pat)
            if any(ch in bare for ch in "*?["):
                hits = fs.glob(bare)
            elif fs.isdir(bare):
                manifest = shards.read_manifest(bare, fs)
                listed = (manifest or {}).get("shards") or []
                hits = ([posixpath.join(bare, s["path"]) for s in listed] if all("path" in s for s in listed) and listed
                        else fs.find(bare))
            elif fs.exists(bare):
                hits = [bare]
            else:
                hits = []
            found.update(("s3://" + h.lstrip("/")) if is_s3(pattern) else os.path.abspath(h) for h in hits
                         if h.endswith(SHARD_SUFFIXES) and f"/{DONE_DIR}/" not in h
                         and not posixpath.basename(h).startswith("."))
    if not found:
        raise FileNotFoundError(f"no WebDataset shards (*.tar) match {patterns!r}")
    return sorted(found)


def check_output_names(urls: Sequence[str]) -> list[str]:
    """The output shard name of every input shard (:func:`shard_name`).

    Raises:
        ValueError: two shards would give the same output name.
    """
    names: dict[str, str] = {}
    for u in urls:
        n = shard_name(u)
        if n in names:
            raise ValueError(f"input shards {names[n]!r} and {u!r} would both write output shard {n!r}")
        names[n] = u
    return list(names)


def open_read(url: str, storage: StorageConfig | None = None) -> io.BufferedIOBase:
    """Open a file for streaming reads."""
    fs, path = _fs_path(url, storage)
    return fs.open(path, "rb")


def iter_samples(fileobj: io.BufferedIOBase, truncated: list[dict[str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """WebDataset samples of a tar stream: ``{"__key__": key, suffix: bytes, ...}`` in tar order.

    The key is the member path up to the first dot of its basename, as WebDataset groups members.
    With a ``truncated`` list, a tar that ends mid-member (or mid-header) is not an error: the samples
    read so far are yielded, the sample being read is dropped and ``{"key", "reason"}`` is appended
    (without it, :class:`tarfile.ReadError` propagates). A stream that is not a tar at all still raises.
    """
    current: dict[str, Any] | None = None
    reading: str | None = None  # key of the member being read
    last = ""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = posixpath.split(member.name)
                if "." not in base or base.startswith("."):
                    continue
                stem, suffix = base.split(".", 1)
                key = posixpath.join(folder, stem) if folder else stem
                reading = key
                data = tar.extractfile(member).read()
                reading, last = None, member.name
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                current[suffix.lower()] = data
        except (tarfile.ReadError, EOFError) as e:
            if truncated is None:
                raise
            if current is not None and current["__key__"] == reading:
                current = None  # its members so far are whole, but the sample is not
            if current is not None:
                yield current
                current = None
            truncated.append({"key": reading if reading is not None else f"(tar tail after {last or 'start'})",
                              "reason": f"truncated: tar ends mid-{'member' if reading is not None else 'header'} "
                                        f"({type(e).__name__}: {e})"})
    if current is not None:
        yield current


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A deterministic uncompressed tar of ``members`` (name -> content) in sorted name order.

    Same packing as the prepared shards (:func:`pipelines.common.shards.tar_bytes`: mtime 0, uid/gid 0, empty user
    names, mode 0644), so identical members give identical bytes.
    """
    return shards.tar_bytes(sorted(members.items()))


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, one-space indent, trailing newline."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def write_atomic(url: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """Readers see nothing or the whole file (local: temp + rename; S3: a single PUT)."""
    write_bytes_atomic(url, data, filesystem_for(url, storage))


def read_bytes(url: str, storage: StorageConfig | None = None) -> bytes:
    fs, path = _fs_path(url, storage)
    return fs.cat_file(path)


def exists(url: str, storage: StorageConfig | None = None) -> bool:
    fs, path = _fs_path(url, storage)
    return fs.exists(path)


def remove(url: str, storage: StorageConfig | None = None) -> None:
    """Delete a file if it exists."""
    fs, path = _fs_path(url, storage)
    if fs.exists(path):
        fs.rm(path)


def done_url(output: str, name: str) -> str:
    """Done marker of output shard ``name``: ``NAME.tar`` (or ``NAME.parquet``) -> ``OUTPUT/_done/NAME.json``."""
    return join(output, DONE_DIR, posixpath.splitext(name)[0] + ".json")


def read_done(output: str, storage: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """All done markers under ``output``: output shard name -> marker content."""
    fs, root = _fs_path(join(output, DONE_DIR), storage)
    fs.invalidate_cache()
    try:
        files = sorted(f for f in fs.ls(root, detail=False)
                       if f.endswith(".json") and not posixpath.basename(f).startswith("."))  # skip .tmp-* writes
    except FileNotFoundError:
        return {}
    markers = {}
    for blob in (fs.cat(files) if files else {}).values():
        m = json.loads(blob)
        markers[m["shard"]] = m
    return markers

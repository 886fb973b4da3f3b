"""Feature cache: MuQ features written once as extra shards, so epochs skip the teacher.

``write_feature_cache(cfg)`` runs the segment + MuQ stages once (epoch 0 offsets, all tracks) and writes
``{cache_dir}/features-000000.tar`` ... with one sample per segment, keyed ``{track key}_s{start}``:
``audio.npy`` [1, L] float32, ``semantic.npy`` [T, D] float32 and ``json`` ({key, start}). The cache's
``manifest.json`` records a fingerprint of everything that shapes the segments and features; the
training pipeline uses the cache only when the fingerprint matches its config. Trade-off: a cached
epoch always sees the same segments.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict
from typing import Any

import numpy as np

from pipelines.common.shards import ShardWriter, read_manifest, write_manifest
from pipelines.common.storage import filesystem_for, is_s3, join, pyarrow_filesystem, strip_scheme
from pipelines.data.config import DataConfig
from pipelines.data.dataset import (
    SplitFilter,
    add_semantic,
    build_segment_dataset,
    resolve_shards,
    segment_spec,
)
from pipelines.data.segments import key_fraction

logger = logging.getLogger(__name__)

PREFIX = "features"


def fingerprint(cfg: DataConfig) -> str:
    """Hash of the source shards, segment geometry, seed and teacher: what the cached rows depend on."""

    facts = {"shards": resolve_shards(cfg), "segments": asdict(segment_spec(cfg)), "teacher": asdict(cfg.teacher)}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_matches(cfg: DataConfig) -> bool:
    """True when ``cfg.cache_dir`` holds a complete cache written for this config."""
    fs = filesystem_for(cfg.cache_dir, cfg.storage)
    manifest = read_manifest(cfg.cache_dir, fs)
    return bool(manifest) and manifest.get("fingerprint") == fingerprint(cfg)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_feature_cache(cfg: DataConfig, max_samples_per_shard: int = 256) -> dict[str, Any]:
    """Compute segments and MuQ features for every track once and write them as cache shards.

    Args:
        cfg: data config; ``cfg.cache_dir`` is the output folder (local or ``s3://``).
        max_samples_per_shard: segments per cache shard.

    Returns:
        The cache manifest (written last, so a killed run leaves no usable cache).
    """
    import ray

    if not cfg.cache_dir:
        raise ValueError("cache_dir is not set")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = add_semantic(build_segment_dataset(cfg, split=None, epoch=0), cfg)
    fs = filesystem_for(cfg.cache_dir, cfg.storage)
    writer = ShardWriter(cfg.cache_dir, fs, PREFIX, max_samples_per_shard, 1 << 30)
    seconds = 0.0
    for row in ds.iter_rows():
        audio = np.asarray(row["audio"], dtype=np.float32)
        meta = json.dumps({"key": str(row["key"]), "start": int(row["start"])}, sort_keys=True).encode()
        duration = audio.shape[-1] / cfg.sample_rate
        writer.add(f"{row['key']}_s{int(row['start'])}", [
            ("audio.npy", _npy(audio)), ("semantic.npy", _npy(np.asarray(row["semantic"], np.float32))),
            ("json", meta)], duration)
        seconds += duration
    writer.flush()
    manifest = writer.manifest(fingerprint=fingerprint(cfg))
    write_manifest(cfg.cache_dir, manifest, fs)
    logger.info("feature cache: %d segments in %d shards", manifest["num_samples"], manifest["num_shards"])
    return manifest


def _decode_cached(row: dict[str, Any]) -> dict[str, Any]:
    meta = json.loads(bytes(row["json"]))
    return {"key": meta["key"],
            "audio": np.load(io.BytesIO(bytes(row["audio.npy"])), allow_pickle=False),
            "semantic": np.load(io.BytesIO(bytes(row["semantic.npy"])), allow_pickle=False)}


def read_feature_cache(cfg: DataConfig, split: str | None = "train"):
    """Cached ``{audio [1, L], semantic [T, D]}`` rows of one split (same key-hash split as the live path)."""
    import ray

    fs = filesystem_for(cfg.cache_dir, cfg.storage)
    manifest = read_manifest(cfg.cache_dir, fs)
    paths = [join(cfg.cache_dir, s["path"]) for s in manifest["shards"]]
    ds = ray.data.read_webdataset([strip_scheme(p) for p in paths] if is_s3(paths[0]) else paths,
                                  filesystem=pyarrow_filesystem(paths[0], cfg.storage), decoder=None,
                                  num_cpus=cfg.cpu.read_num_cpus)
    ds = ds.map(_decode_cached, num_cpus=cfg.cpu.read_num_cpus)
    ds = ds.filter(SplitFilter(split, cfg.val_fraction), num_cpus=cfg.cpu.read_num_cpus)
    return ds.select_columns(["audio", "semantic"], num_cpus=cfg.cpu.read_num_cpus)


__all__ = ["cache_matches", "fingerprint", "key_fraction", "read_feature_cache", "write_feature_cache"]

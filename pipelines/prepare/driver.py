"""Corpus preparation, the driver: music files (local or ``s3://``) -> deterministic WebDataset shards.

Lists the sources, transcodes them on Ray Data (``pipelines.prepare.stage``), packs the results in sorted
key order into shards and writes ``manifest.json`` and ``rejected.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pipelines.common.shards import ShardWriter, write_manifest
from pipelines.common.storage import filesystem_for, is_s3, write_bytes_atomic
from pipelines.prepare.config import PrepareConfig
from pipelines.prepare.stage import TranscodeStage, list_sources

logger = logging.getLogger(__name__)

REJECTED = "rejected.jsonl"


def run_prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Run the whole preparation: list, transcode on Ray, write shards, ``rejected.jsonl``, manifest.

    Args:
        cfg: the job config.

    Returns:
        The manifest dict (also written to ``{output}/manifest.json``).
    """
    import ray
    from tqdm import tqdm

    storage = cfg.storage.resolved()  # on the driver: workers may lack the AWS environment
    sources, rejects = list_sources(cfg.inputs, cfg.extensions, storage)
    out_fs = filesystem_for(cfg.output, storage)
    if not is_s3(cfg.output):
        os.makedirs(cfg.output, exist_ok=True)
    writer = ShardWriter(cfg.output, out_fs, cfg.shard_prefix, cfg.max_samples_per_shard, cfg.max_bytes_per_shard)
    changes = dict.fromkeys(("truncated", "clipped", "clipped_samples"), 0)  # kept, but not exactly as the source
    if sources:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # shards follow the sorted key order: deterministic
        items = [{"uri": s.uri, "relpath": s.relpath, "key": s.key} for s in sources]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // cfg.batch_size, 256)))
        ds = ds.map_batches(TranscodeStage(storage), batch_size=cfg.batch_size, batch_format="numpy",
                            num_cpus=cfg.num_cpus)
        uri_of = {s.key: s.uri for s in sources}
        with tqdm(total=len(items), desc="prepare", unit="file", disable=not cfg.progress) as bar:
            for row in ds.iter_rows():
                bar.update(1)
                if row["reason"]:
                    rejects.append({"key": row["key"], "source": uri_of[row["key"]], "reason": row["reason"],
                                    "detail": row["detail"]})
                    continue
                meta = json.loads(bytes(row["json"]))
                changes["truncated"] += int(meta["truncated"])
                changes["clipped"] += int(meta["clipped_samples"] > 0)
                changes["clipped_samples"] += meta["clipped_samples"]
                writer.add(row["key"], [(str(row["member"]), bytes(row["audio"])), ("json", bytes(row["json"]))],
                           float(row["duration"]))
    writer.flush()
    rejects.sort(key=lambda r: (r["key"], r["source"]))
    rejected_path = cfg.output.rstrip("/") + "/" + REJECTED
    write_bytes_atomic(rejected_path, b"".join(dumps_line(r) for r in rejects), out_fs)
    manifest = writer.manifest(num_rejected=len(rejects), rejected=REJECTED, format="flac|wav+json",
                               changes=changes)
    write_manifest(cfg.output, manifest, out_fs)
    logger.info("prepared %d samples in %d shards (%.1f s of audio), %d rejected; kept with changes: %d truncated, "
                "%d clipped (%d samples)", manifest["num_samples"], manifest["num_shards"],
                manifest["total_duration"], len(rejects), changes["truncated"], changes["clipped"],
                changes["clipped_samples"])
    return manifest


def dumps_line(obj: dict[str, Any]) -> bytes:
    """One JSONL line with sorted keys."""
    return (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")

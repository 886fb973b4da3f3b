"""Top-level ``manifest.json`` and ``stats.json`` of a token output, built from the done markers.

Both depend only on the done markers of the input's shards (no timings, no run ids), so a resumed
run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.tokenize.config import FORMAT_VERSION
from pipelines.tokenize.writers import TarWriter, TokenWriter


def layer_stats(counts: np.ndarray) -> list[dict[str, float]]:
    """Per-layer codebook usage and perplexity.

    Args:
        counts: int [n_q, codebook_size] code histogram.

    Returns:
        One dict per layer: ``used`` (codes seen), ``usage`` (fraction of the codebook seen),
        ``perplexity`` (exp of the code entropy, in codes), ``entropy_bits``.
    """
    out = []
    for row in np.asarray(counts, dtype=np.float64):
        total = row.sum()
        p = row[row > 0] / total if total > 0 else np.zeros(0)
        entropy = float(-(p * np.log(p)).sum()) if p.size else 0.0
        out.append({
            "used": int((row > 0).sum()),
            "usage": round(float((row > 0).mean()), 6) if row.size else 0.0,
            "perplexity": round(float(np.exp(entropy)), 4),
            "entropy_bits": round(entropy / np.log(2), 4),
        })
    return out


def build_stats(markers: list[dict[str, Any]], pending: list[str]) -> dict[str, Any]:
    """stats.json content from done markers (sorted by shard) and the names of shards not yet done."""
    tracks = sum(m["tracks"] for m in markers)
    seconds = sum(m["seconds"] for m in markers)
    frames = sum(m["frames"] for m in markers)
    counts = [np.asarray(m["codebook_counts"], dtype=np.int64) for m in markers if m["codebook_counts"]]
    n_q = counts[0].shape[0] if counts else 0
    total = sum(counts) if counts else np.zeros((0, 0), np.int64)
    return {
        "format_version": FORMAT_VERSION,
        "complete": not pending,
        "shards": len(markers),
        "pending_shards": sorted(pending),
        "tracks": tracks,
        "seconds": round(seconds, 6),
        "hours": round(seconds / 3600, 6),
        "frames": frames,
        "n_q": n_q,
        "tokens": frames * n_q,
        "codebook": layer_stats(total),
        "skipped": [{"shard": m["shard"], **s} for m in markers for s in m["skipped"]],
    }


def build_manifest(markers: list[dict[str, Any]], pending: list[str], model: dict[str, Any],
                   config_hash: str, frame_rate: int = 25, writer: TokenWriter | None = None) -> dict[str, Any]:
    """manifest.json content: the pinned model, config hash, output format and one entry per done shard."""
    writer = writer or TarWriter()
    return {
        "format": "muq-xcodec-tokens",
        "format_version": FORMAT_VERSION,
        "complete": not pending,
        "model": {k: model.get(k) for k in ("uri", "load_uri", "kind", "name", "version")},
        "config_hash": config_hash,
        "frame_rate": frame_rate,
        **({} if writer.format == "tar" else {"output_format": writer.format}),
        "members": ({"codes": "KEY.codes.npy (int16 [n_q, T])", "meta": "KEY.json"} if writer.format == "tar"
                    else {"rows": writer.members}),
        "shards": [
            {"name": m["shard"], "tracks": m["tracks"], "seconds": round(m["seconds"], 6), "frames": m["frames"],
             "skipped": len(m["skipped"]), "bytes": m["bytes"], "sha256": m["sha256"]}
            for m in markers
        ],
        "pending_shards": sorted(pending),
    }

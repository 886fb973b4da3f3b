"""Typed config of the corpus preparation job (``jobs/prepare.py``): YAML -> :func:`load_prepare_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.common.config import fail, load_config
from pipelines.common.storage import StorageConfig


@dataclass
class PrepareConfig:
    """``jobs/prepare.py``: music files -> WebDataset shards.

    Attributes:
        inputs: folders (searched recursively), audio files or ``.txt`` file lists (one path per line),
            local or ``s3://``.
        output: output folder or ``s3://bucket/prefix``.
        shard_prefix: shards are ``{output}/{shard_prefix}-000000.tar`` ...
        max_samples_per_shard: roll to a new shard after this many samples.
        max_bytes_per_shard: roll before a shard exceeds this many bytes.
        extensions: audio file suffixes picked up from folders.
        num_cpus: CPUs per transcoding task (fractional is fine).
        batch_size: files per transcoding task call.
        progress: show a progress bar.
        storage: S3 endpoint / credentials (empty = AWS environment variables).
    """

    inputs: list[str] = field(default_factory=list)
    output: str = "outputs/shards"
    shard_prefix: str = "shard"
    max_samples_per_shard: int = 1000
    max_bytes_per_shard: int = 256 * 2**20
    extensions: list[str] = field(default_factory=lambda: ["wav", "flac", "mp3", "ogg", "oga", "opus"])
    num_cpus: float = 1.0
    batch_size: int = 4
    progress: bool = True
    storage: StorageConfig = field(default_factory=StorageConfig)



def load_prepare_config(source: str | Path | dict[str, Any] | None = None,
                        overrides: list[str] | None = None) -> PrepareConfig:
    """Load and check a :class:`PrepareConfig` from a YAML path or dict plus ``key=value`` overrides.

    Raises:
        ConfigError: unknown key, wrong type or bad value; the message starts with the key.
    """
    cfg = load_config(PrepareConfig, source, overrides)
    if not cfg.inputs:
        fail("inputs", "give at least one folder, file or file list")
    for name in ("max_samples_per_shard", "max_bytes_per_shard", "batch_size", "num_cpus"):
        if getattr(cfg, name) <= 0:
            fail(name, f"must be > 0, got {getattr(cfg, name)}")
    return cfg


